"""Small models: the default engine against torch's fastest step, from the first steps.

Models of 0.1M–5M float32 parameters in 1–50 tensors (:data:`MODELS`). For
each optimizer, torch.optim's fastest implementation on the CPU — ``fused``
where torch has one (SGD, Adagrad, Adam, AdamW), else ``foreach`` — and
descentlab's default engine (``auto``) step copies of the same parameters
and gradients, one timed step of each in turn, the order alternating
(:func:`~descentlab.bench.interleaved_speed.interleave`): two warm-up steps
(the first timed on its own), then the rounds. ``auto`` compiles only runs of
at least :data:`~descentlab.engine.auto.COMPILE_THRESHOLD` elements, in the
background; for those models (2M and 5M parameters, rules without a torch
kernel) the kernel is compiled before the rounds, so that their rows are the
compiled step (the steps during a build are the eager flat engine's).
For the other models no compile happens:
the rows are what a fresh model gets from its first steps.

Reported per row: the median step time, the first step, and ``speedup``:
torch's median over ours (the goal is ≥ 1.0 for every model and optimizer).
"""

from __future__ import annotations

import gc
import os
import statistics
from typing import Any

import torch

from descentlab.bench.interleaved_speed import interleave, traffic_bytes
from descentlab.engine import kernels
from descentlab.engine.auto import COMPILE_THRESHOLD
from descentlab.machine import describe_machine

__all__ = ["MODELS", "QUICK_MODELS", "run_small_models", "format_small_models"]

#: label → (tensors, parameters per tensor)
MODELS = {
    "0.1M in 1": (1, 100_000),
    "0.5M in 20": (20, 25_000),
    "1M in 4": (4, 250_000),
    "2M in 50": (50, 40_000),
    "5M in 10": (10, 500_000),
}
QUICK_MODELS = {k: MODELS[k] for k in ("0.1M in 1", "0.5M in 20")}
#: torch.optim classes with a fused CPU implementation
FUSED = {"sgd", "adagrad", "adam", "adamw"}
SETTINGS: dict[str, dict[str, Any]] = {"sgd": {"lr": 0.01, "momentum": 0.9}}


def _makers(name: str) -> dict[str, Any]:
    import descentlab
    from descentlab.bench.step_speed import TORCH_CLASSES

    cls = getattr(torch.optim, TORCH_CLASSES[name])
    setting = SETTINGS.get(name, {})
    kind = "fused" if name in FUSED else "foreach"
    return {
        f"torch-{kind}": lambda ps: cls(ps, **setting, **{kind: True}),
        "auto": lambda ps: descentlab.make_optimizer(name, ps, engine="auto", **setting),
    }


def _compile_first(name: str, master: list[torch.Tensor]) -> None:
    """Build (and wait for) the kernel ``auto`` compiles for this model, if it compiles one."""
    import descentlab

    params = [torch.nn.Parameter(t.clone()) for t in master]
    for p in params:
        p.grad = torch.zeros_like(p)
    descentlab.make_optimizer(name, params, engine="auto", **SETTINGS.get(name, {})).step()
    for kernel in list(kernels._KERNELS.values()):
        kernel.wait()


def run_small_models(
    optimizers: list[str], repeats: int, quick: bool = False
) -> dict[str, Any]:
    """Time every optimizer on every small model (see the module docstring)."""
    rows = []
    for model, (count, size) in (QUICK_MODELS if quick else MODELS).items():
        gen = torch.Generator().manual_seed(0)
        master = [torch.randn(size, generator=gen) for _ in range(count)]
        grads = [torch.randn(size, generator=gen) * 1e-2 for _ in range(count)]
        for name in optimizers:
            if count * size >= COMPILE_THRESHOLD:
                _compile_first(name, master)
            runs = interleave(_makers(name), master, grads, repeats)
            found = []
            for variant, (opt, params, _, first, times) in runs.items():
                found.append({
                    "optimizer": name, "model": model, "tensors": count,
                    "params": count * size, "variant": variant,
                    "ms": 1e3 * statistics.median(times), "ms_min": 1e3 * min(times),
                    "first_step_ms": 1e3 * first, "samples": len(times),
                    "bytes": traffic_bytes(opt, params),
                })
            del runs
            torch_ms = found[0]["ms"]
            for row in found:
                row["speedup"] = torch_ms / row["ms"]
            rows += found
        gc.collect()
    return {"rows": rows, "repeats": repeats, "threads": torch.get_num_threads(),
            "load_average": os.getloadavg(), "machine": describe_machine()}


def format_small_models(result: dict[str, Any]) -> str:
    """The default engine's rows as a markdown table (one column per model)."""
    load = ", ".join(f"{x:.1f}" for x in result["load_average"])
    models = list(dict.fromkeys(r["model"] for r in result["rows"]))
    ours = {(r["optimizer"], r["model"]): r for r in result["rows"] if r["variant"] == "auto"}
    against = {(r["optimizer"], r["model"]): r["variant"]
               for r in result["rows"] if r["variant"] != "auto"}
    lines = [
        f"small models: x faster than torch's fastest step with the default engine "
        f"(goal >= 1.0), median of {result['repeats']} interleaved rounds from step 3, "
        f"{result['threads']} threads, load average {load}",
        "",
        "| optimizer | against | " + " | ".join(models) + " |",
        "|---|---|" + "---:|" * len(models),
    ]
    for name in dict.fromkeys(r["optimizer"] for r in result["rows"]):
        cells = [f"{ours[(name, m)]['speedup']:.2f}" for m in models]
        lines.append(f"| {name} | {against[(name, models[0])]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
