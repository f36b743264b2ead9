"""Step time of descentlab's ASGD, Rprop and Adafactor against torch.optim, timed interleaved.

Each model's variants (torch's implementations and ours) are built over fresh
copies of the same parameters and gradients and stepped in turn, one timed
step each per round (order alternating), so that a change of load on a shared
machine hits all of them alike. Rows give the median step time, the minimum
traffic of the update (parameter and tensor state read and written, gradient
read) and two ratios:

* ``per_byte_vs_fused_adam``: time per byte relative to torch's fused Adam,
  timed in the same rounds (ASGD and Rprop, elementwise, at 20M float32
  parameters in 200 tensors: their goal is ≤ 1.1);
* ``speedup_vs_forloop``: torch's for-loop step time over this one (Adafactor
  on models of many matrices: torch has no fused Adafactor, and its foreach
  one is slower on the CPU).
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from descentlab.machine import describe_machine

__all__ = [
    "ELEMENTWISE_MODELS",
    "MATRIX_MODELS",
    "interleave",
    "run_interleaved",
    "format_interleaved",
    "traffic_bytes",
]

#: Model specs: name → list of (count, shape).
ELEMENTWISE_MODELS = {"20M in 200 tensors": [(200, (100_000,))]}
MATRIX_MODELS = {
    "96 of 256x256 + 96 biases": [(96, (256, 256)), (96, (256,))],
    "24 of 384x384": [(24, (384, 384))],
    "400 of 64x64 + 400 biases": [(400, (64, 64)), (400, (64,))],
    "12 of 1024x1024": [(12, (1024, 1024))],
}
QUICK_ELEMENTWISE = {"2M in 20 tensors": [(20, (100_000,))]}
QUICK_MATRICES = {"24 of 128x128 + 24 biases": [(24, (128, 128)), (24, (128,))]}


def _tensors(spec: list[tuple[int, tuple[int, ...]]], seed: int, scale: float) -> list:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) * scale
            for count, shape in spec for _ in range(count)]


def _variants(name: str) -> dict[str, Callable[[list], torch.optim.Optimizer]]:
    import descentlab

    torch_cls = getattr(torch.optim, {"asgd": "ASGD", "rprop": "Rprop"}.get(name, "Adafactor"))
    ours = descentlab.make_optimizer
    out: dict[str, Callable[[list], torch.optim.Optimizer]] = {
        "torch-forloop": lambda ps: torch_cls(ps, foreach=False),
        "torch-foreach": lambda ps: torch_cls(ps, foreach=True),
    }
    if name != "adafactor":
        out["torch-fused-adam"] = lambda ps: torch.optim.Adam(ps, fused=True)
        out["compiled"] = lambda ps: ours(name, ps, engine="compiled")
    out["flat"] = lambda ps: ours(name, ps, engine="flat")
    out["auto"] = lambda ps: ours(name, ps, engine="auto")
    return out


def traffic_bytes(opt: torch.optim.Optimizer, params: list) -> int:
    """Bytes one step moves at least: θ and every tensor state entry read and written, g read.

    Each parameter counts its own bytes and those of its own state tensors
    (the step counter and 0-dim bookkeeping excluded), so parameters of
    several dtypes and rules with state of other shapes (Adafactor's row and
    column statistics) are counted as they are.
    """
    total = 0
    for p in params:
        state = [v for k, v in opt.state[p].items() if torch.is_tensor(v) and k != "step"]
        total += p.nbytes * 3 + 2 * sum(v.nbytes for v in state if v.dim() > 0)
    return total


#: steps of each variant after ``settle()``, before the timed rounds
SETTLE_STEPS = 4


def interleave(
    makers: dict[str, Callable[[list], torch.optim.Optimizer]],
    master: list[torch.Tensor],
    grads: list[torch.Tensor],
    repeats: int,
    step_of: Callable[[torch.optim.Optimizer], Callable[[], Any]] = lambda opt: opt.step,
    settle: Callable[[], Any] | None = None,
) -> dict[str, tuple[torch.optim.Optimizer, list, Callable[[], Any], float, list[float]]]:
    """Time the variants against each other in one process, one step of each in turn.

    Each variant steps its own copy of ``master`` with gradients ``grads``;
    two warm-up steps (the first one timed: state made, kernels compiled),
    then, if ``settle`` is given, ``settle()`` (e.g. waiting for background
    compiles) and :data:`SETTLE_STEPS` more steps of each variant, then
    ``repeats`` rounds of one timed step per variant, the order reversed
    every other round. Returns ``{variant: (optimizer, params, step, first_s, times_s)}``.
    """
    runs = {}
    for variant, make in makers.items():
        params = [torch.nn.Parameter(t.clone()) for t in master]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt = make(params)
        step = step_of(opt)
        start = time.perf_counter()
        step()
        first = time.perf_counter() - start
        step()
        runs[variant] = (opt, params, step, first, [])
    if settle is not None:
        settle()
        for _ in range(SETTLE_STEPS):
            for _, _, step, _, _ in runs.values():
                step()
    order = list(runs)
    for i in range(repeats):
        for variant in order if i % 2 == 0 else order[::-1]:
            _, _, step, _, times = runs[variant]
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return runs


def _measure(name: str, model: str, spec: list, repeats: int) -> list[dict[str, Any]]:
    master, grads = _tensors(spec, 0, 1.0), _tensors(spec, 1, 1e-2)
    runs = interleave(_variants(name), master, grads, repeats)
    rows = []
    for variant, (opt, params, _, _, times) in runs.items():
        rows.append({"optimizer": name, "model": model, "variant": variant,
                     "ms": 1e3 * statistics.median(times), "ms_min": 1e3 * min(times),
                     "samples": len(times), "bytes": traffic_bytes(opt, params),
                     "params": sum(p.numel() for p in params)})
    del runs
    gc.collect()
    by = {r["variant"]: r for r in rows}
    for r in rows:
        if "torch-fused-adam" in by:
            adam = by["torch-fused-adam"]
            r["per_byte_vs_fused_adam"] = (r["ms"] / r["bytes"]) / (adam["ms"] / adam["bytes"])
        r["speedup_vs_forloop"] = by["torch-forloop"]["ms"] / r["ms"]
    return rows


def run_interleaved(optimizers: list[str], repeats: int, quick: bool = False) -> dict[str, Any]:
    """Measure every requested optimizer of ASGD, Rprop and Adafactor on its models (Adafactor
    once its C library is built or loaded: ``adafactor_library`` says whether it was, and in
    how many seconds)."""
    rows = []
    library = None
    if "adafactor" in optimizers:  # the steps timed are those after its C library is ready
        from descentlab.rules.adafactor_kernel import LIBRARY

        library = {"ready": LIBRARY.wait() is not None, "error": LIBRARY.error,
                   "seconds": LIBRARY.seconds}
    for name in optimizers:
        if name == "adafactor":
            models = QUICK_MATRICES if quick else MATRIX_MODELS
        else:
            models = QUICK_ELEMENTWISE if quick else ELEMENTWISE_MODELS
        for model, spec in models.items():
            rows += _measure(name, model, spec, repeats)
    out = {"rows": rows, "repeats": repeats, "threads": torch.get_num_threads(),
           "load_average": os.getloadavg(), "machine": describe_machine()}
    if "adafactor" in optimizers:
        out["adafactor_library"] = library
    return out


def format_interleaved(result: dict[str, Any]) -> str:
    """The rows as a markdown table."""
    load = ", ".join(f"{x:.1f}" for x in result["load_average"])
    lines = [
        f"interleaved ({result['repeats']} rounds, {result['threads']} threads, "
        f"load average {load}):",
        "",
    ]
    library = result.get("adafactor_library")
    if library is not None:
        lines += [f"Adafactor's C library ready in {library['seconds']:.2f} s" if library["ready"]
                  else f"Adafactor's C library unavailable ({library['error']}): eager passes",
                  ""]
    lines += [
        "| optimizer | model | variant | ms/step | GB/s | time/byte vs fused Adam | "
        "x faster than torch for-loop |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        per_byte = r.get("per_byte_vs_fused_adam")
        lines.append(
            f"| {r['optimizer']} | {r['model']} | {r['variant']} | {r['ms']:.2f} | "
            f"{r['bytes'] / (r['ms'] * 1e-3) / 1e9:.1f} | "
            f"{'-' if per_byte is None else f'{per_byte:.2f}'} | {r['speedup_vs_forloop']:.2f} |"
        )
    return "\n".join(lines) + "\n"
