"""Where a default-engine step goes on many small tensors (case (b): 2,000 x 1,000 float32).

For each optimizer, one process, interleaved rounds; each round first takes one
full step of the optimizer (which streams its buffers through the caches, as a
step does after the previous one; ``--after fused``: one step of torch's fused
Adam on its own copy of the tensors, as in the goal's interleaved timing, which
leaves none of ours in the caches), then times one of the parts below, so
every part is timed with the caches as a step finds them:

* ``step``: one whole ``optimizer.step()`` (``engine="auto"``, background
  compile finished);
* ``check C++`` / ``check Python``: the per-step check that every ``.data``
  is still its slot and every ``.grad`` its flat view
  (:mod:`descentlab.engine.slot_check`), each way; ``check C++ + versions``:
  the check and then the count of the step in the parameters' version
  counters, as a steady step makes them;
* ``kernel, all threads`` / ``kernel, one thread``: the update of the whole
  buffer alone (torch's fused kernel or the compiled one);
* ``torch fused Adam``: one step of ``torch.optim.Adam(fused=True)`` on the
  same tensors (the goal's reference).

Also: the torch ops one step calls (``torch.profiler``: the children of its
``Optimizer.step`` range)
and the bytes the update moves at the triad bandwidth of DESIGN.md (43.6 GB/s).
Medians of ``--rounds``; the load average is recorded. Writes
``benchmarks/results/step_breakdown.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path

import torch

import descentlab
from descentlab.bench.interleaved_speed import traffic_bytes
from descentlab.engine import kernels, slot_check
from descentlab.engine.base import describe
from descentlab.engine.whole import one_thread
from descentlab.machine import describe_machine

COUNT, SIZE = 2000, 1000
TRIAD_GBPS = 43.6
SETTINGS = {"sgd": {"lr": 0.01, "momentum": 0.9}}


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return 1e3 * (time.perf_counter() - start)


def breakdown(name: str, rounds: int, after: str = "ours") -> dict:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(SIZE, generator=gen)) for _ in range(COUNT)]
    for p in params:
        p.grad = torch.randn(SIZE, generator=gen) * 1e-2
    opt = descentlab.make_optimizer(name, params, **SETTINGS.get(name, {}))
    for _ in range(3):
        opt.step()
    for kernel in list(kernels._KERNELS.values()):
        kernel.wait()
    for _ in range(3):
        opt.step()
    engine, group = opt._engine, opt.param_groups[0]
    (bucket,) = engine.layout(opt, group).buckets
    run = describe(opt, group).at(10)
    scalars = {k: v[0].clone() for k, v in bucket.scalar_state.items()}
    call = engine.kernel_call(run, bucket.data, bucket.grad, dict(bucket.state), scalars)
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p, q in zip(params, theirs, strict=True):
        q.grad = p.grad.clone()
    fused = torch.optim.Adam(theirs, fused=True)
    fused.step()
    keys = slot_check.expected_keys(bucket.data_ptrs, bucket.grad_views)

    def python_check() -> bool:
        return slot_check.python_check(bucket.params, bucket.data_ptrs, bucket.grad_views)

    def library_check() -> bool:
        return slot_check.slots_hold(bucket.params, bucket.data_ptrs, bucket.grad_views, keys)

    def check_and_versions() -> None:
        library_check()
        slot_check.bump_versions(bucket.params)

    def kernel_one_thread() -> None:
        with one_thread():
            call()

    parts = {"step": opt.step, "check C++": library_check,
             "check C++ + versions": check_and_versions, "check Python": python_check,
             "kernel, all threads": call, "kernel, one thread": kernel_one_thread,
             "torch fused Adam": fused.step}
    times: dict[str, list[float]] = {k: [] for k in parts}
    before = opt.step if after == "ours" else fused.step
    for r in range(rounds):
        order = list(parts) if r % 2 == 0 else list(parts)[::-1]
        for part in order:
            before()  # the caches as a step leaves them
            times[part].append(_timed(parts[part]))
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        opt.step()
    (outer,) = [e for e in prof.events() if e.name.startswith("Optimizer.step")]
    ops = Counter(child.name for child in outer.cpu_children)  # what the step itself calls
    moved = traffic_bytes(opt, params)
    return {
        "optimizer": name,
        "after": after,
        "library": slot_check.LIBRARY.ready,
        "ms": {k: statistics.median(v) for k, v in times.items()},
        "ms_min": {k: min(v) for k, v in times.items()},
        "ops_per_step": dict(ops),
        "bytes": moved,
        "bandwidth_ms": moved / (TRIAD_GBPS * 1e9) * 1e3,
        "load_average": os.getloadavg(),
        "machine": describe_machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", default="sgd,adam,nadam,rmsprop")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--after", choices=["ours", "fused"], default="ours",
                        help="the step taken before each timed part (see the docstring)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/step_breakdown.json"))
    args = parser.parse_args()
    slot_check.LIBRARY.wait()
    rows = [breakdown(n, args.rounds, args.after) for n in args.optimizers.split(",")]
    parts = list(rows[0]["ms"])
    print(f"case (b) {COUNT} x {SIZE} float32, {torch.get_num_threads()} threads, medians of "
          f"{args.rounds} rounds, ms, each after a step of {args.after}; load average "
          + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print()
    print("| optimizer | " + " | ".join(parts) + " | bytes at 43.6 GB/s | ops per step |")
    print("|---|" + "---:|" * (len(parts) + 2))
    for row in rows:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(row["ops_per_step"].items()))
        print(f"| {row['optimizer']} | " + " | ".join(f"{row['ms'][p]:.2f}" for p in parts)
              + f" | {row['bandwidth_ms']:.2f} | {ops} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "rounds": args.rounds,
                                     "threads": torch.get_num_threads()}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
