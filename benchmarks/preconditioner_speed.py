"""Step time and state memory of the per-matrix preconditioners against pytorch_optimizer's.

Usage: ``python benchmarks/preconditioner_speed.py [--repeats N] [--only NAME] [--model M]
[--threads N] [--json PATH]``

For each model (a stack of hidden matrices plus their biases, float32) and
each optimizer, descentlab's class and pytorch_optimizer's are built over
copies of the same parameters and gradients and stepped in alternation, one
timed step of each in turn (order alternating, so load changes hit both
alike). After the first step (SOAP's only builds the bases) and
:data:`WARMUP` untimed steps each, the medians cover ordinary steps; the
refresh steps (SOAP: every ``precondition_frequency`` steps a basis
refresh; Shampoo: every ``preconditioning_compute_steps`` steps the inverse
roots) are reported on their own, and the mean over all timed steps
(refreshes included: what a run of many steps costs) as a ratio of its own.
Each ordinary step of ours is also paired with the reference's of the same
round: the median of those ratios, its spread (interquartile range over the
median) and its minimum say how steady the comparison was. The process CPU
time of each step is recorded too: with ``--threads 1`` on a loaded machine
it scatters far less than wall time (it leaves out the time other processes
hold the core; with more threads it counts the OpenMP workers' spinning).
State memory is the bytes of every state tensor (also those inside the
reference's state objects) over the number of parameter elements. Writes a
table to stdout and JSON with the load average.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import statistics
import time
from pathlib import Path

import pytorch_optimizer
import torch

import descentlab
from descentlab.commands import arguments as a
from descentlab.machine import describe_machine

MODELS = {
    "24 × 256×256": [(256, 256)] * 24 + [(256,)] * 24,
    "8 × 512×512": [(512, 512)] * 8 + [(512,)] * 8,
    "4 × 1024×256": [(1024, 256)] * 4 + [(256,)] * 4,
}
#: name → (ours, reference, setting, whether step t refreshes the bases / roots)
PAIRS = {
    "soap": (descentlab.SOAP, pytorch_optimizer.SOAP, {"precondition_frequency": 10},
             lambda t: (t - 1) % 10 == 0),
    "shampoo": (descentlab.Shampoo, pytorch_optimizer.ScalableShampoo,
                {"preconditioning_compute_steps": 10, "start_preconditioning_step": 1},
                lambda t: t % 10 == 0),
}


#: Untimed steps of each optimizer after the first, before timing starts
WARMUP = 4


def _opt(cls, shapes, setting, gen_seed=0):
    gen = torch.Generator().manual_seed(gen_seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    grads = [torch.randn(s, generator=gen) * 1e-2 for s in shapes]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    opt = cls(params, **setting)
    return opt, params, grads


def _tensors(value) -> list[torch.Tensor]:
    """The tensors of a state entry: a tensor, a list of them, or an object holding them."""
    if isinstance(value, torch.Tensor):
        return [value] if value.dim() > 0 else []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if type(value).__module__.startswith("pytorch_optimizer") and not isinstance(value, enum.Enum):
        # its PreConditioner, BlockPartitioner and Graft objects
        return [t for v in vars(value).values() for t in _tensors(v)]
    return []


def _state_bytes_per_param(opt, params) -> float:
    total = 0
    for p in params:
        for value in opt.state[p].values():
            total += sum(t.numel() * t.element_size() for t in _tensors(value))
    return total / sum(p.numel() for p in params)


def _spread(values: list[float]) -> float:
    """The interquartile range over the median (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4)
    return (q[2] - q[0]) / statistics.median(values)


def measure(name: str, model: str, repeats: int, warmup: int = WARMUP) -> list[dict]:
    """Interleaved step times of ours and the reference on one model.

    After the first step (SOAP's builds the bases) each optimizer takes
    ``warmup`` untimed steps, interleaved, then ``repeats`` timed ones, one of
    each in turn (the order alternating). Besides the medians, each ordinary
    step of ours is paired with the reference's step of the same round: the
    median of those paired ratios follows load changes within the run; the
    spreads are interquartile ranges over the median.
    """
    ours_cls, ref_cls, setting, refreshes = PAIRS[name]
    runs = {}
    for label, cls in (("descentlab", ours_cls), ("pytorch_optimizer", ref_cls)):
        opt, params, grads = _opt(cls, MODELS[model], setting)
        opt.step()  # SOAP: builds the bases
        runs[label] = {"opt": opt, "params": params, "grads": grads, "times": [],
                       "refresh": [], "cpu": [], "all": []}
    for i in range(warmup + repeats):
        t = i + 2  # the step about to be taken
        order = list(runs) if i % 2 == 0 else list(runs)[::-1]
        for label in order:
            run = runs[label]
            for p, g in zip(run["params"], run["grads"], strict=True):  # neither edits them
                p.grad = g.clone()
            start, start_cpu = time.perf_counter(), time.process_time()
            run["opt"].step()
            elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            if i < warmup:
                continue
            run["all"].append(elapsed)
            if refreshes(t):
                run["refresh"].append(elapsed)
            else:
                run["times"].append(elapsed)
                run["cpu"].append(cpu)
    ours, ref = runs["descentlab"], runs["pytorch_optimizer"]
    paired = [r / o for o, r in zip(ours["times"], ref["times"], strict=True)]
    rows = []
    for label, run in runs.items():
        rows.append({
            "optimizer": name, "model": model, "implementation": label,
            "ms_per_step": 1e3 * statistics.median(run["times"]),
            "spread": _spread(run["times"]),
            "cpu_ms_per_step": 1e3 * statistics.median(run["cpu"]),
            "ms_refresh_step": 1e3 * statistics.median(run["refresh"]) if run["refresh"] else None,
            "ms_mean_all_steps": 1e3 * statistics.fmean(run["all"]),
            "state_bytes_per_param": _state_bytes_per_param(run["opt"], run["params"]),
        })
    for row in rows:
        row["ratio_to_reference"] = rows[1]["ms_per_step"] / row["ms_per_step"]
        row["cpu_ratio_to_reference"] = rows[1]["cpu_ms_per_step"] / row["cpu_ms_per_step"]
        row["mean_ratio_to_reference"] = rows[1]["ms_mean_all_steps"] / row["ms_mean_all_steps"]
    rows[0]["paired_ratio_median"] = statistics.median(paired)
    rows[0]["paired_ratio_spread"] = _spread(paired)
    rows[0]["paired_ratio_min"] = min(paired)
    return rows


def main() -> None:
    """Run every (optimizer, model) pair and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=a.positive_int, default=40)
    parser.add_argument("--only", choices=list(PAIRS), help="one optimizer (default: all)")
    parser.add_argument("--model", choices=list(MODELS), help="one model (default: all)")
    parser.add_argument("--threads", type=a.positive_int, default=None,
                        help="torch threads (default: torch's, the number of cores)")
    parser.add_argument("--json", default=None,
                        help="default benchmarks/results/preconditioner_speed[_NAME].json")
    args = parser.parse_args()
    if args.repeats < 2:
        parser.error(f"--repeats must be >= 2, got {args.repeats}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    names = [args.only] if args.only else list(PAIRS)
    if args.json is None:
        suffix = f"_{args.only}" if args.only else ""
        args.json = f"benchmarks/results/preconditioner_speed{suffix}.json"
    torch.manual_seed(0)
    before = os.getloadavg()
    models = [args.model] if args.model else list(MODELS)
    rows = [r for name in names for model in models for r in measure(name, model, args.repeats)]
    after = os.getloadavg()
    print("| optimizer | model | implementation | ms/step (median) | spread | "
          "ms/refresh step | speed vs reference (medians) | paired ratio: median (IQR/median, "
          "min) | all steps (mean) vs reference | CPU time vs reference | state bytes/param |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        refresh = f"{r['ms_refresh_step']:.1f}" if r["ms_refresh_step"] is not None else "–"
        paired = (f"{r['paired_ratio_median']:.2f}× ({r['paired_ratio_spread']:.2f}, "
                  f"{r['paired_ratio_min']:.2f}×)" if "paired_ratio_median" in r else "–")
        print(f"| {r['optimizer']} | {r['model']} | {r['implementation']} | "
              f"{r['ms_per_step']:.2f} | {r['spread']:.2f} | {refresh} | "
              f"{r['ratio_to_reference']:.2f}× | {paired} | {r['mean_ratio_to_reference']:.2f}× | "
              f"{r['cpu_ratio_to_reference']:.2f}× | {r['state_bytes_per_param']:.1f} |")
    print(f"load average before {before}, after {after}; torch threads {torch.get_num_threads()}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(
        {"rows": rows, "load_average_before": before, "load_average_after": after,
         "threads": torch.get_num_threads(), "torch": torch.__version__,
         "machine": describe_machine(),
         "repeats": args.repeats, "warmup": WARMUP}, indent=1))


if __name__ == "__main__":
    main()
