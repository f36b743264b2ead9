"""Batched tensor-rule stacks on all torch threads, on one, and as the engine chooses.

Usage: ``python benchmarks/small_stacks.py [--repeats N] [--busy K] [--only RULE]
[--json PATH]``

The flat engines step a batched tensor rule with one call per stack
``[B, *shape]`` of same-shape parameters; each op of it opens a parallel
region over torch's threads, which on a busy machine waits for a descheduled
thread every time. ``engine/whole.py: ThreadChoice`` times each stack on all
threads and, now and then, on one, and keeps the faster way (for the rules
whose bits do not depend on the thread count: Adafactor, Muon).

For each rule and stack (B matrices d×d; Adafactor with B biases of d too,
as in ``descentlab speed``), three optimizers of the default engine over
copies of the same parameters and gradients are stepped in turn (the order
rotating): ``chosen`` (the library), ``all threads`` (the choice off: the
rule's ``same_bits_on_any_thread_count`` patched False) and ``one thread``
(the whole step under ``torch.set_num_threads(1)``). After 3 warm-up steps
each, reported: the median and mean ms/step of each (the mean counts the
choice's probes), the spread (interquartile range over the median) and the
speed of ``chosen`` over ``all threads`` (medians, > 1: the choice helps)
and over ``one thread``. ``--busy K`` starts K processes that spin for the
run (a background load; stopped at the end). Adafactor's C library is built
first (else its eager passes are timed, and the script says so).

Writes JSON with the load average (default
``benchmarks/results/small_stacks.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import time
from pathlib import Path
from unittest import mock

import torch

import descentlab
from descentlab.commands import arguments as a
from descentlab.engine import whole
from descentlab.rules import adafactor_kernel

#: rule → (class, setting); stacks → (B, d)
RULES = {
    "adafactor": (descentlab.Adafactor, {"lr": 0.01}),
    "muon": (descentlab.Muon, {"lr": 0.02}),
}
STACKS = [(400, 16), (100, 32), (24, 64), (400, 64), (24, 128), (96, 128), (24, 256), (8, 512)]
WAYS = ("chosen", "all threads", "one thread")
WARMUP = 3


def _spin() -> None:  # pragma: no cover - a background load
    while True:
        pass


def _build(cls, setting, shapes):
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    grads = [torch.randn(s, generator=gen) * 1e-2 for s in shapes]
    return {"opt": cls(params, **setting), "params": params, "grads": grads, "times": []}


def _step(run, way: str) -> float:
    for p, g in zip(run["params"], run["grads"], strict=True):
        p.grad = g.clone()
    rule = type(run["opt"].rule)
    with (mock.patch.object(rule, "same_bits_on_any_thread_count", way == "chosen"),
          whole.one_thread() if way == "one thread" else contextlib.nullcontext()):
        start = time.perf_counter()
        run["opt"].step()
        return time.perf_counter() - start


def _spread(values: list[float]) -> float:
    q = statistics.quantiles(values, n=4)
    return (q[2] - q[0]) / statistics.median(values)


def measure(rule: str, count: int, d: int, repeats: int) -> dict:
    """Interleaved step times of the three ways on ``count`` matrices d×d (and biases)."""
    cls, setting = RULES[rule]
    shapes = [(d, d)] * count + ([(d,)] * count if rule == "adafactor" else [])
    runs = {way: _build(cls, setting, shapes) for way in WAYS}
    for i in range(WARMUP + repeats):
        for way in WAYS[i % 3:] + WAYS[:i % 3]:
            elapsed = _step(runs[way], way)
            if i >= WARMUP:
                runs[way]["times"].append(elapsed)
    row = {"rule": rule, "stack": f"{count} × {d}²", "elements": count * d * d}
    for way in WAYS:
        times = runs[way]["times"]
        row[way] = {"ms_median": 1e3 * statistics.median(times),
                    "ms_mean": 1e3 * statistics.fmean(times), "spread": _spread(times)}
    row["chosen_vs_all_threads"] = row["all threads"]["ms_median"] / row["chosen"]["ms_median"]
    row["chosen_vs_one_thread"] = row["one thread"]["ms_median"] / row["chosen"]["ms_median"]
    return row


def main() -> None:
    """Run every rule on every stack and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=a.int_at_least(4), default=20)
    parser.add_argument("--busy", type=a.int_at_least(0), default=0,
                        help="background spinning processes")
    parser.add_argument("--only", choices=list(RULES), help="one rule (default: all)")
    parser.add_argument("--json", default="benchmarks/results/small_stacks.json")
    args = parser.parse_args()
    if adafactor_kernel.LIBRARY.wait() is None:  # Adafactor's C library, built in the background
        print(f"Adafactor's library is not available ({adafactor_kernel.LIBRARY.error}): "
              "its eager passes are timed")
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for s in spinners:
        s.start()
    try:
        before = os.getloadavg()
        rows = [measure(rule, count, d, args.repeats)
                for rule in ([args.only] if args.only else RULES) for count, d in STACKS]
        after = os.getloadavg()
    finally:
        for s in spinners:
            s.terminate()
            s.join()
    print("| rule | stack | elements | chosen ms/step: median, mean (spread) | all threads | "
          "one thread | chosen vs all threads | chosen vs one thread |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [f"{r[w]['ms_median']:.2f}, {r[w]['ms_mean']:.2f} ({r[w]['spread']:.2f})"
                 for w in WAYS]
        print(f"| {r['rule']} | {r['stack']} | {r['elements']:,} | {' | '.join(cells)} | "
              f"{r['chosen_vs_all_threads']:.2f}× | {r['chosen_vs_one_thread']:.2f}× |")
    print(f"load average before {before}, after {after}; busy processes {args.busy}; "
          f"torch threads {torch.get_num_threads()}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(
        {"rows": rows, "busy": args.busy, "load_average_before": before,
         "load_average_after": after, "threads": torch.get_num_threads(),
         "torch": torch.__version__, "repeats": args.repeats, "warmup": WARMUP}, indent=1))


if __name__ == "__main__":
    main()
