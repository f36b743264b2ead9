"""Muon step time: torch.optim.Muon against descentlab.Muon, interleaved in one process.

24 matrices of 384 × 384 (float32) by default, both optimizers on copies of
the same parameters and gradients, one timed step of each in turn (the order
alternating), after two warm-up steps. Also times where torch's step goes:
its per-matrix bfloat16 products (``mm`` for X Xᵀ, two ``addmm``) against the
batched ones our flat engine uses (``bmm``, two ``baddbmm``) for one
Newton–Schulz iteration over all matrices, and one ``bmm`` in float32 (what
the bfloat16 products save on this CPU). Each step's process CPU time is
recorded beside its wall time (steadier on a loaded machine with
``--threads 1``). Writes JSON (with the load
average) to ``benchmarks/results/muon_speed.json`` and prints a table.

Usage: ``python benchmarks/muon_speed.py [--count 24] [--size 384] [--repeats 10] [--threads N]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

import descentlab
from descentlab.bench.step_speed import time_steps
from descentlab.commands import arguments as a
from descentlab.machine import describe_machine


def _optimizers(count: int, size: int, engine: str):
    gen = torch.Generator().manual_seed(0)
    master = [torch.randn(size, size, generator=gen) for _ in range(count)]
    grads = [torch.randn(size, size, generator=gen) * 1e-2 for _ in range(count)]
    made = {}
    for name in ("torch", "descentlab"):
        params = [torch.nn.Parameter(m.clone()) for m in master]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt = (torch.optim.Muon(params, lr=0.02) if name == "torch"
               else descentlab.Muon(params, lr=0.02, engine=engine))
        made[name] = (opt, params)
    return made


def _products(count: int, size: int, repeats: int) -> dict[str, float]:
    """ms of one Newton–Schulz iteration's products over all matrices, per matrix and batched."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(count, size, size, generator=gen).bfloat16() / size
    out: dict[str, list[float]] = {"mm": [], "addmm (×2)": [], "bmm": [], "baddbmm (×2)": [],
                                   "bmm float32": []}

    def loop_mm():
        return [m @ m.T for m in x]

    def loop_addmm():
        return [torch.addmm(torch.addmm(m, m, m, beta=-4.775, alpha=2.0315), m, m, beta=3.4445)
                for m in x]

    def batched_mm():
        return torch.bmm(x, x.mT)

    def batched_addmm():
        return torch.baddbmm(torch.baddbmm(x, x, x, beta=-4.775, alpha=2.0315), x, x,
                             beta=3.4445)

    wide = x.float()

    def batched_mm_float32():
        return torch.bmm(wide, wide.mT)

    fns = {"mm": loop_mm, "addmm (×2)": loop_addmm, "bmm": batched_mm,
           "baddbmm (×2)": batched_addmm, "bmm float32": batched_mm_float32}
    for _ in range(repeats):
        for key, fn in fns.items():
            out[key].extend(time_steps(fn, 1))
    return {k: 1e3 * statistics.median(v) for k, v in out.items()}


def main() -> None:
    """Measure, print and save (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=a.positive_int, default=24)
    parser.add_argument("--size", type=a.positive_int, default=384)
    parser.add_argument("--repeats", type=a.positive_int, default=10)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--threads", type=a.positive_int, default=None,
                        help="torch threads (default: torch's, the number of cores)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/muon_speed.json"))
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    made = _optimizers(args.count, args.size, args.engine)
    for opt, _ in made.values():
        opt.step()
        opt.step()
    times: dict[str, list[float]] = {name: [] for name in made}
    cpu: dict[str, list[float]] = {name: [] for name in made}
    order = list(made)
    for i in range(args.repeats):
        for name in order if i % 2 == 0 else order[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            made[name][0].step()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    cpu_ms = {name: 1e3 * statistics.median(t) for name, t in cpu.items()}
    products = _products(args.count, args.size, max(3, args.repeats // 2))
    result = {
        "count": args.count, "size": args.size, "engine": args.engine,
        "repeats": args.repeats, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "ms_per_step": ms, "ms_min": {n: 1e3 * min(t) for n, t in times.items()},
        "speedup": ms["torch"] / ms["descentlab"],
        "cpu_ms_per_step": cpu_ms, "cpu_speedup": cpu_ms["torch"] / cpu_ms["descentlab"],
        "newton_schulz_iteration_products_ms": products, "machine": describe_machine(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"Muon, {args.count} matrices of {args.size}×{args.size}, float32, "
          f"{torch.get_num_threads()} threads, load {load_before[0]:.1f}→"
          f"{result['load_average_after'][0]:.1f}")
    print("| optimizer | ms/step (median) | ms/step (min) | CPU ms/step (median) |\n"
          "|---|---|---|---|")
    for name in made:
        print(f"| {name} | {ms[name]:.0f} | {result['ms_min'][name]:.0f} | {cpu_ms[name]:.0f} |")
    print(f"speed-up: {result['speedup']:.2f}× (CPU time: {result['cpu_speedup']:.2f}×)")
    print("one Newton–Schulz iteration, products over all matrices (bfloat16; one bmm in float32):")
    for key, value in products.items():
        print(f"  {key}: {value:.0f} ms")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
