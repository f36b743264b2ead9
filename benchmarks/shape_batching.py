"""Batching by shape against batching neighbours only, for the batched tensor rules.

Usage: ``python benchmarks/shape_batching.py [--repeats N] [--threads N] [--json PATH]``

The flat engines step a batched tensor rule (Muon, Adafactor, SOAP) on
``[B, *shape]`` stacks of same-shape slots. Their buckets order the slots by
shape (:func:`descentlab.engine.layout.by_shape`), so same-shape parameters
batch wherever they sit in the group; before, only neighbouring ones did.
This script builds each model's optimizer both ways over copies of the same
parameters and gradients — ``by shape`` (the library) and ``neighbours``
(the slot order of the group, as before: ``by_shape`` replaced by the
identity while the optimizer is built) — plus torch.optim's class of the
same name, and times one step of each in turn (the order rotating), after
three warm-up steps. Reported: the median ms/step, the spread (the
interquartile range over the median), the number of batches per step and
the ratios. Models (float32):

* ``muon transformer``: 6 blocks of d = 192, each with the attention's four
  d×d matrices, then the MLP's 4d×d and d×4d (neighbours: batches 4, 1, 1 per
  block; by shape: 24, 6, 6);
* ``adafactor 24 × 384² + biases``: 24 matrices of 384×384, each followed by
  its bias of 384 (neighbours: 48 batches of one; by shape: 2).

Writes JSON with the load average to ``benchmarks/results/shape_batching.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from unittest import mock

import torch

import descentlab
from descentlab.commands import arguments as a
from descentlab.engine import layout

D = 192
MODELS = {
    "muon transformer (6 × d=192)": (
        descentlab.Muon, torch.optim.Muon, {"lr": 0.02},
        [(D, D)] * 4 + [(4 * D, D), (D, 4 * D)]),
    "adafactor 24 × 384² + biases": (
        descentlab.Adafactor, torch.optim.Adafactor, {"lr": 0.01},
        [(384, 384), (384,)]),
}
BLOCKS = {"muon transformer (6 × d=192)": 6, "adafactor 24 × 384² + biases": 24}


def _build(cls, setting, shapes, neighbours=False):
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-2
    if neighbours:
        with mock.patch.object(layout, "by_shape", lambda ps: ps):
            return cls(params, **setting)
    return cls(params, **setting)


def _batches(opt) -> int:
    """Stacks handed to the rule in one step (counted on a copy of the optimizer's step)."""
    rule = type(opt).rule
    count = 0
    original = type(rule).update

    def counting(self, *args, **kwargs):
        nonlocal count
        count += 1
        return original(self, *args, **kwargs)

    with mock.patch.object(type(rule), "update", counting):
        opt.step()
    return count


def measure(name: str, repeats: int) -> dict:
    """Interleaved step times of the three variants on one model."""
    ours, theirs, setting, block = MODELS[name]
    shapes = block * BLOCKS[name]
    made = {
        "by shape": _build(ours, setting, shapes),
        "neighbours": _build(ours, setting, shapes, neighbours=True),
        "torch.optim": _build(theirs, setting, shapes),
    }
    batches = {k: _batches(v) for k, v in made.items() if k != "torch.optim"}
    for opt in made.values():
        for _ in range(3):
            opt.step()
    times: dict[str, list[float]] = {k: [] for k in made}
    names = list(made)
    for i in range(repeats):
        for k in names[i % 3:] + names[:i % 3]:
            start = time.perf_counter()
            made[k].step()
            times[k].append(time.perf_counter() - start)
    row: dict = {"model": name, "batches_per_step": batches}
    row["ms_per_step"] = {k: 1e3 * statistics.median(t) for k, t in times.items()}
    row["spread"] = {}
    for k, t in times.items():
        q = statistics.quantiles(t, n=4)
        row["spread"][k] = (q[2] - q[0]) / statistics.median(t)
    ms = row["ms_per_step"]
    row["by_shape_vs_neighbours"] = ms["neighbours"] / ms["by shape"]
    row["by_shape_vs_torch"] = ms["torch.optim"] / ms["by shape"]
    row["neighbours_vs_torch"] = ms["torch.optim"] / ms["neighbours"]
    return row


def main() -> None:
    """Measure every model, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=a.positive_int, default=21)
    parser.add_argument("--threads", type=a.positive_int, default=None,
                        help="torch threads (default: torch's, the number of cores)")
    parser.add_argument("--json", type=Path,
                        default=Path("benchmarks/results/shape_batching.json"))
    args = parser.parse_args()
    if args.repeats < 4:
        parser.error(f"--repeats must be >= 4, got {args.repeats}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    before = os.getloadavg()
    rows = [measure(name, args.repeats) for name in MODELS]
    after = os.getloadavg()
    print("| model | batches/step (by shape / neighbours) | by shape ms | neighbours ms | "
          "torch.optim ms | by shape vs neighbours | by shape vs torch | spread (IQR/median) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms, b, s = r["ms_per_step"], r["batches_per_step"], r["spread"]
        print(f"| {r['model']} | {b['by shape']} / {b['neighbours']} | {ms['by shape']:.1f} | "
              f"{ms['neighbours']:.1f} | {ms['torch.optim']:.1f} | "
              f"{r['by_shape_vs_neighbours']:.2f}× | {r['by_shape_vs_torch']:.2f}× | "
              + " / ".join(f"{s[k]:.2f}" for k in ms) + " |")
    print(f"load average before {before}, after {after}; torch threads {torch.get_num_threads()}; "
          f"{args.repeats} interleaved steps each")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(
        {"rows": rows, "repeats": args.repeats, "load_average_before": before,
         "load_average_after": after, "threads": torch.get_num_threads(),
         "torch": torch.__version__}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
