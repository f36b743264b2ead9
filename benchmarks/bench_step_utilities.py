"""Overhead of the utilities around an optimizer step, against the bare step.

Measures, on one model in one process (median of ``--repeats`` timings of
``--steps`` steps each):

* ``torch.optim.Adam`` step alone (the reference);
* the same step wrapped in :class:`descentlab.guard.NonFiniteGuard`;
* the step plus ``ScheduleController.step()`` scheduling lr and beta1;
* the step plus ``clip_grad_norm_`` (torch) and ``adaptive_clip_grad_``.

Prints a table of time per step and the ratio to the bare step, and writes
JSON (default ``benchmarks/results/step_utilities.json``).

    .venv/bin/python benchmarks/bench_step_utilities.py [--tensors 200] [--size 10000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from descentlab.clipping import adaptive_clip_grad_, clip_grad_norm_
from descentlab.commands import arguments as a
from descentlab.guard import NonFiniteGuard, grads_are_finite
from descentlab.schedules import attach, one_cycle_momentum, warmup_cosine


def make_params(tensors: int, size: int) -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(size // 100, 100)) for _ in range(tensors)]
    for p in ps:
        p.grad = torch.randn_like(p) * 1e-2
    return ps


def time_cases(cases: dict, steps: int, repeats: int) -> dict[str, float]:
    """Median seconds per call; cases are interleaved so machine load hits all alike."""
    for fn in cases.values():
        for _ in range(3):
            fn()
    runs: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            runs[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(r) for name, r in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tensors", type=a.positive_int, default=200)
    ap.add_argument("--size", type=a.positive_int, default=10_000, help="elements per tensor")
    ap.add_argument("--steps", type=a.positive_int, default=20)
    ap.add_argument("--repeats", type=a.positive_int, default=7)
    ap.add_argument("--out", default="benchmarks/results/step_utilities.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    def setup(foreach: bool = True):
        ps = make_params(args.tensors, args.size)
        return ps, torch.optim.Adam(ps, lr=1e-3, foreach=foreach)

    cases = {}
    ps, opt = setup()
    cases["Adam step (reference)"] = lambda: opt.step()
    ps_g, opt_g = setup()
    guard = NonFiniteGuard(opt_g)
    cases["NonFiniteGuard(Adam) step"] = lambda: guard.step()
    ps_s, opt_s = setup()
    ctrl = attach(opt_s, lr=warmup_cosine(1e-3, 100, 10**9), beta1=one_cycle_momentum(10**9))

    def scheduled():
        opt_s.step()
        ctrl.step()

    cases["Adam step + ScheduleController.step (lr, beta1)"] = scheduled
    ps_c, opt_c = setup()

    def clipped():
        clip_grad_norm_(ps_c, 1e9)
        opt_c.step()

    cases["clip_grad_norm_ + Adam step"] = clipped
    ps_a, opt_a = setup()

    def agc():
        adaptive_clip_grad_(ps_a, 1e3)
        opt_a.step()

    cases["adaptive_clip_grad_ + Adam step"] = agc

    cases["ScheduleController.step alone"] = ctrl.step
    cases["grads_are_finite alone"] = lambda: grads_are_finite(opt_g)
    results = time_cases(cases, args.steps, args.repeats)
    ref = results["Adam step (reference)"]
    n = args.tensors * (args.size // 100) * 100
    print(f"{args.tensors} tensors, {n:,} float32 params, 1 thread, foreach Adam; "
          f"median of {args.repeats} interleaved runs of {args.steps} steps")
    print(f"| {'case':<48} | {'ms/step':>8} | {'vs Adam':>7} |")
    print(f"|{'-' * 50}|{'-' * 10}|{'-' * 9}|")
    for name, sec in results.items():
        print(f"| {name:<48} | {sec * 1e3:8.3f} | {sec / ref:7.3f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "config": vars(args), "params": n, "torch": torch.__version__,
        "seconds_per_step": results, "ratio_to_reference": {k: v / ref for k, v in results.items()},
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
