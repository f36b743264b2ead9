"""What keeping aliases live costs: step speed, kept gradient handles, waiting parameters.

Usage: ``python benchmarks/aliasing_costs.py [--quick] [--json PATH]``.

Everything is measured in one process, interleaved (round after round, each
variant once per round, the median over rounds), as ratios to references of
the same round, because the machine is shared:

* **step**: Adam's step on the flat, compiled and auto engines (auto once its
  background kernel is ready), and on the flat engine with new gradient
  tensors at every step (as after the default ``zero_grad()``), as ratios to
  torch's fused Adam, on the two cases of ``descentlab speed --quick``
  (20 × 100,000 and 200 × 1,000 float32);
* **kept gradient handle**: a flat step whose gradients are held elsewhere
  (``g = p.grad`` kept with ``zero_grad(set_to_none=False)``, or DDP's bucket
  views), so they are copied in at every step, against gradients that live in
  the flat buffer;
* **waiting parameters**: parameters whose memory another tensor sees are
  stepped per tensor: the reference engine's step against the flat one;
* **construction**: building the optimizer, which now lays out the buffers;
* **hook alternative** (not used): a no-op ``register_post_accumulate_grad_hook``
  on every parameter, as a way to move fresh gradients during ``backward``,
  costs this much per backward of 2,000 small tensors;
* **plain views** (the former layout): ``torch.save`` of one of eight layers
  when the parameters are views of one buffer, against slots of their own.

With ``--threads 1`` every time is the thread's CPU time (``time.thread_time``),
which a busy machine does not inflate; otherwise wall time. The JSON records
the clock and the load average before and after.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import descentlab
from descentlab.commands import arguments as a

CASES = {"a": (20, 100_000), "b": (200, 1000)}


def _params(count: int, size: int, seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(size, generator=gen)) for _ in range(count)]
    for p in params:
        p.grad = torch.randn(size, generator=gen) * 1e-2
    return params


#: The clock: wall time, or with one thread the thread's CPU time (robust to a busy machine).
CLOCK = time.perf_counter


def _once(fn: Callable[[], Any]) -> float:
    start = CLOCK()
    fn()
    return CLOCK() - start


def _interleaved(
    variants: dict[str, Callable[[], Any]],
    rounds: int,
    setup: dict[str, Callable[[], Any]] | None = None,
) -> dict[str, float]:
    """Median seconds of each variant over ``rounds`` rounds (each round runs all once).

    ``setup[name]``, if given, runs untimed before each timed call of that variant.
    """
    setup = setup or {}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds + 2):  # two warm-up rounds
        for name, fn in variants.items():
            if name in setup:
                setup[name]()
            seconds = _once(fn)
            if r >= 2:
                times[name].append(seconds)
    return {k: statistics.median(v) for k, v in times.items()}


def _optimizer(engine: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if engine == "torch-fused":
        return torch.optim.Adam(params, fused=True)
    return descentlab.Adam(params, engine=engine)


def step_ratios(count: int, size: int, rounds: int) -> dict[str, float]:
    """ms per Adam step of torch fused and our engines, and our ratios to torch fused."""
    opts = {e: _optimizer(e, _params(count, size)) for e in ("torch-fused", "flat", "compiled")}
    auto = _optimizer("auto", _params(count, size))
    auto.step()
    from descentlab.engine import kernels

    for kernel in list(kernels._KERNELS.values()):
        kernel.wait()
    opts["auto"] = auto
    fresh = descentlab.Adam(_params(count, size), engine="flat")
    pool = [p.grad for p in fresh.param_groups[0]["params"]]

    def new_gradients() -> None:  # as after zero_grad() and backward: new tensors every step
        for p, g in zip(fresh.param_groups[0]["params"], pool, strict=True):
            p.grad = g.clone()

    variants = {**{k: o.step for k, o in opts.items()}, "flat-fresh-grads": fresh.step}
    times = _interleaved(variants, rounds, setup={"flat-fresh-grads": new_gradients})
    out = {f"{k}_ms": 1e3 * v for k, v in times.items()}
    for k in ("flat", "compiled", "auto", "flat-fresh-grads"):
        out[f"{k}_vs_fused"] = times[k] / times["torch-fused"]
    return out


def kept_handle_cost(count: int, size: int, rounds: int) -> dict[str, float]:
    """A flat step with gradients in the buffer against one with gradients held elsewhere."""
    inside = _params(count, size)
    held = _params(count, size)
    handles = [p.grad for p in held]  # kept: they stay .grad, copied in at every step
    opt_inside = descentlab.Adam(inside, engine="flat")
    opt_held = descentlab.Adam(held, engine="flat")
    times = _interleaved({"inside": opt_inside.step, "held": opt_held.step}, rounds)
    assert all(p.grad is g for p, g in zip(held, handles, strict=True))
    return {
        "grads_in_buffer_ms": 1e3 * times["inside"],
        "grads_held_ms": 1e3 * times["held"],
        "ratio": times["held"] / times["inside"],
    }


def waiting_cost(count: int, size: int, rounds: int) -> dict[str, float]:
    """Per-tensor steps (what a parameter whose memory is seen gets) against flat ones."""
    flat = descentlab.Adam(_params(count, size), engine="flat")
    per_tensor = descentlab.Adam(_params(count, size), engine="reference")
    times = _interleaved({"flat": flat.step, "per_tensor": per_tensor.step}, rounds)
    return {
        "flat_ms": 1e3 * times["flat"],
        "per_tensor_ms": 1e3 * times["per_tensor"],
        "ratio": times["per_tensor"] / times["flat"],
    }


def construction_seconds(count: int, size: int) -> dict[str, float]:
    """Building a flat Adam (which lays the buffers out) and its first step."""
    params = _params(count, size)
    opt = None

    def build() -> None:
        nonlocal opt
        opt = descentlab.Adam(params, engine="flat")

    built = _once(build)
    return {"construct_s": built, "first_step_s": _once(opt.step)}


def hook_backward_cost(count: int = 2000, size: int = 10, rounds: int = 15) -> dict[str, float]:
    """Backward with and without a no-op post-accumulate-grad hook on every parameter."""
    plain = [torch.nn.Parameter(torch.randn(size)) for _ in range(count)]
    hooked = [torch.nn.Parameter(torch.randn(size)) for _ in range(count)]
    for p in hooked:
        p.register_post_accumulate_grad_hook(lambda t: None)

    def backward(params):
        return lambda: sum((p * p).sum() for p in params).backward()

    times = _interleaved({"plain": backward(plain), "hooked": backward(hooked)}, rounds)
    return {
        "backward_ms": 1e3 * times["plain"],
        "backward_with_hooks_ms": 1e3 * times["hooked"],
        "us_per_hook": 1e6 * (times["hooked"] - times["plain"]) / count,
    }


def _saved(obj: Any) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return len(buffer.getvalue())


def plain_view_bytes(layers: int = 8, width: int = 256) -> dict[str, int]:
    """Bytes of ``torch.save(one layer's state_dict())``: own slots against plain views."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    descentlab.Adam(model.parameters(), engine="flat")
    slots = _saved(model[3].state_dict())
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    offset = 0
    for p in model.parameters():  # what the parameters were before: views of one buffer
        p.data = flat[offset : offset + p.numel()].view(p.shape)
        offset += p.numel()
    return {"slots_bytes": slots, "plain_views_bytes": _saved(model[3].state_dict())}


def main(argv: list[str] | None = None) -> int:
    """Run the measurements, print a table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument(
        "--steps-only", action="store_true", help="only the step ratios (runs on older versions)"
    )
    parser.add_argument("--threads", type=a.int_at_least(0), default=0,
                        help="torch threads (default: torch's)")
    parser.add_argument("--json", default="benchmarks/results/aliasing_costs.json")
    args = parser.parse_args(argv)
    global CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
    if torch.get_num_threads() == 1:
        CLOCK = time.thread_time
    rounds = 9 if args.quick else 25
    load_before = os.getloadavg()
    result: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "clock": CLOCK.__name__,
    }
    for case, (count, size) in CASES.items():
        result[f"step_{case}"] = step_ratios(count, size, rounds)
    if args.steps_only:
        return _finish(result, load_before, Path(args.json))
    result["kept_handle_b"] = kept_handle_cost(*CASES["b"], rounds)
    result["kept_handle_a"] = kept_handle_cost(*CASES["a"], rounds)
    result["waiting_b"] = waiting_cost(*CASES["b"], rounds)
    result["waiting_a"] = waiting_cost(*CASES["a"], rounds)
    result["construction_b"] = construction_seconds(*CASES["b"])
    result["construction_2000"] = construction_seconds(2000, 1000)
    result["hook"] = hook_backward_cost()
    result["bytes"] = plain_view_bytes()
    return _finish(result, load_before, Path(args.json))


def _finish(result: dict[str, Any], load_before: tuple[float, ...], path: Path) -> int:
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    for key, value in result.items():
        if isinstance(value, dict):
            cells = ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items()
            )
            print(f"| {key} | {cells} |")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
