"""Cost and reachability of every registered problem, measured in one process on one thread.

For each problem and each of Adam, plain SGD and SGD with heavy-ball momentum 0.9, a
log-spaced learning-rate grid (10⁻⁴ … 10^½ in steps of 10^½) is run on two
seeds; a setting counts when *both* seeds reach the problem's target at one of
its evaluation points. The table reports the best setting's steps to target
(the worse of the two seeds) as a share of the step budget, the time of one
full-budget run (Adam at its best rate, evaluating every ``eval_every`` steps,
median of three; wall and CPU seconds) and the CPU seconds of one full-batch
run (what the ``gd`` entrant does, estimated from three steps). From these it
estimates the default ``descentlab compare`` cost: 8 entrants × (10 trials +
3 seeds) runs per problem of the default suite, on 2 workers. The ``suites``
column names the suites (``descentlab list suites``) that hold each problem.
Rows of problems not measured in a run are kept from the existing ``--out``
file; each row records when it was measured and the load average.

    .venv/bin/python benchmarks/problems_budget.py [--problems a,b | --suite NAME] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from descentlab.problems import (
    DEFAULT_SUITE,
    available_problems,
    available_suites,
    get_problem,
    get_suite,
)
from descentlab.problems.trajectory import named_optimizer

GRID = tuple(10.0 ** (k / 2) for k in range(-8, 2))
OPTIMIZERS = ("adam", "sgd", "momentum")  # "momentum": the preset, SGD with momentum 0.9
SEEDS = (0, 1)


def steps_to_target(problem, name, hparams, seed, stop_early=True):
    """First evaluation step meeting the target (None if never), wall and CPU time of the run."""
    task = problem.build(seed)
    opt = named_optimizer(name, **hparams)(task.parameters())
    start, cpu = time.perf_counter(), time.process_time()
    hit = None
    for step in range(1, problem.steps + 1):
        task.train_step(opt)
        if step % problem.eval_every == 0 or step == problem.steps:
            value = task.evaluate()[problem.metric]
            if hit is None and problem.reached(value):
                hit = step
                if stop_early:
                    break
    return hit, time.perf_counter() - start, time.process_time() - cpu


def full_batch_cpu_seconds(problem, repeats=3):
    """CPU seconds of one full-batch run (what the ``gd`` entrant does), from ``repeats`` steps."""
    if problem.batch_size is None:
        return None
    task = dataclasses.replace(problem, batch_size=None).build(0)
    opt = named_optimizer("sgd", lr=1e-3)(task.parameters())
    task.train_step(opt)
    cpu = time.process_time()
    for _ in range(repeats):
        task.train_step(opt)
    return (time.process_time() - cpu) / repeats * problem.steps


def measure(problem):
    row = {"problem": problem.name, "kind": problem.kind, "steps": problem.steps,
           "metric": problem.metric, "target": problem.target}
    for name in OPTIMIZERS:
        best = None
        for lr in GRID:
            hits = [steps_to_target(problem, name, {"lr": lr}, s)[0] for s in SEEDS]
            if all(h is not None for h in hits) and (best is None or max(hits) < best[0]):
                best = (max(hits), lr)
        row[name] = None if best is None else {"steps": best[0], "lr": best[1]}
    lr = row["adam"]["lr"] if row["adam"] else 1e-3
    times = [steps_to_target(problem, "adam", {"lr": lr}, 0, stop_early=False)[1:]
             for _ in range(3)]
    row["seconds_per_run"] = statistics.median(t[0] for t in times)
    row["cpu_seconds_per_run"] = statistics.median(t[1] for t in times)
    row["full_batch_cpu_seconds_per_run"] = full_batch_cpu_seconds(problem)
    row["load_average_1min"] = os.getloadavg()[0]
    row["measured"] = time.strftime("%Y-%m-%d %H:%M")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--problems", default=",".join(available_problems()))
    chosen.add_argument("--suite", choices=available_suites(), help="the problems of a suite")
    parser.add_argument("--out", default="benchmarks/results/problems_budget.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    from rich.progress import track

    suites = {name: get_suite(name).problems for name in available_suites()}
    names = list(suites[args.suite]) if args.suite else [n for n in args.problems.split(",") if n]
    rows = [measure(get_problem(n)) for n in track(names, description="problems")]

    def cell(r, key):
        hit = r[key]
        if hit is None:
            return "not reached"
        return f"{hit['steps']} ({100 * hit['steps'] / r['steps']:.0f}%) @ lr {hit['lr']:.3g}"

    for r in rows:
        r["suites"] = [name for name, members in suites.items() if r["problem"] in members]
    header = ("problem", "suites", "budget", "target", "Adam: steps to target", "SGD: steps",
              "momentum SGD: steps", "s/run", "CPU s/run", "full-batch CPU s/run")
    lines = [header] + [
        (r["problem"], ",".join(r["suites"]) or "-", str(r["steps"]),
         f"{r['metric']} {'≥' if get_problem(r['problem']).higher_is_better else '≤'} "
         f"{r['target']:g}", cell(r, "adam"), cell(r, "sgd"), cell(r, "momentum"),
         f"{r['seconds_per_run']:.3f}", f"{r['cpu_seconds_per_run']:.3f}",
         "-" if r["full_batch_cpu_seconds_per_run"] is None
         else f"{r['full_batch_cpu_seconds_per_run']:.1f}")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
    default = [r for r in rows if r["problem"] in DEFAULT_SUITE]
    estimate = None
    if len(default) == len(DEFAULT_SUITE):
        estimate = sum(r["seconds_per_run"] for r in default) * 8 * (10 + 3) / 2
        print(f"\ndefault suite: {sum(r['seconds_per_run'] for r in default):.2f} s for one run "
              f"of each problem; estimated run time of the default compare (8 entrants × "
              f"13 runs, 2 workers, no overhead): {estimate:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # keep the rows of problems not measured now (each row has its date)
        measured = {r["problem"] for r in rows}
        kept = [r for r in json.loads(out.read_text())["rows"] if r["problem"] not in measured]
        rows = sorted(rows + kept, key=lambda r: r["problem"])
    out.write_text(json.dumps({
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "threads": 1, "grid": GRID, "seeds": SEEDS, "rows": rows,
        "default_suite": DEFAULT_SUITE, "suites": suites,
        "default_compare_estimate_seconds": estimate,
        "load_average_1min_this_run": {"start": load_before[0], "end": os.getloadavg()[0]},
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
