"""``descentlab distributed``: bytes exchanged against the final metric, per exchange method.

Trains the digits CNN and the character transformer with ``--world-size``
local ranks (gloo on 127.0.0.1) under dense all-reduce, torch's fp16 and
PowerSGD hooks and descentlab's threshold, top-k, DGC and sign hooks, for
``--seeds`` seeds each, and writes into ``--out``: ``results.jsonl`` (one
line per finished run, so a killed run resumes), ``summary.json``,
``table.md``, ``bytes_vs_metric.png`` and ``report.html`` (offline). The
logic lives in :mod:`descentlab.distributed.benchmark`.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from descentlab.commands import arguments as a

__all__ = ["register", "run", "main"]

_PROG = "descentlab distributed"


def _names(kind: str, valid: Any) -> Any:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"no {kind} given in {text!r}")
        for name in names:
            valid(name)
        return names

    return parse


def _method(name: str) -> None:
    from descentlab.distributed.methods import parse_method

    try:
        parse_method(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _task_names() -> list[str]:
    from descentlab.distributed.benchmark import TASKS

    return list(TASKS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options (shared by the command and ``benchmarks/distributed_compression.py``)."""
    parser.add_argument("--quick", action="store_true",
                        help="CI size: 2 ranks, 20 steps, 1 seed, one method of each kind")
    parser.add_argument("--tasks", type=a.name_list(_task_names, "task"), default=None,
                        help="comma-separated: digits_cnn, stdlib_char_transformer (default both)")
    parser.add_argument("--methods", type=_names("method", _method), default=None,
                        help="comma-separated, e.g. dense,fp16,powersgd-2,topk-0.01,dgc-0.001,"
                             "threshold-sign-0.01,threshold-value-0.003,threshold-fixed-0.05,sign")
    parser.add_argument("--seeds", type=a.positive_int, default=None, help="seeds per method (3)")
    parser.add_argument("--world-size", type=a.positive_int, default=None,
                        help="ranks per run (4; --quick: 2)")
    parser.add_argument("--steps", type=a.positive_int, default=None,
                        help="override every task's step budget")
    parser.add_argument("--out", type=a.output_folder, default=Path("descentlab-distributed"),
                        help="output folder (default descentlab-distributed)")
    parser.add_argument("--figure", type=a.output_file, default=None,
                        help="also write the PNG here (e.g. docs/figures/distributed.png)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: Any) -> None:
    """Add ``descentlab distributed``."""
    parser = subparsers.add_parser(
        "distributed", help="benchmark gradient compression for DDP: bytes vs final metric",
        description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.set_defaults(func=run, requires=a.needs("sklearn", "matplotlib", "tqdm"))


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the arguments describe; print the table and the goals."""
    from dataclasses import replace

    from descentlab.distributed import benchmark as bench
    from descentlab.distributed import report
    from descentlab.distributed.methods import DEFAULT_METHODS, QUICK_METHODS

    tasks_by_name = bench.QUICK_TASKS if args.quick else bench.TASKS
    tasks = [tasks_by_name[n] for n in (args.tasks or list(tasks_by_name))]
    if args.steps:
        tasks = [replace(t, steps=args.steps) for t in tasks]
    methods = args.methods or list(QUICK_METHODS if args.quick else DEFAULT_METHODS)
    if "dense" not in methods:
        methods = ["dense", *methods]  # the baseline of every ratio
    seeds = args.seeds or (1 if args.quick else 3)
    world = args.world_size or (2 if args.quick else 4)
    for task in tasks:
        from descentlab.problems import get_problem

        batch = get_problem(task.problem).batch_size
        if batch % world:
            return a.fail(_PROG, f"argument --world-size: {world} does not divide "
                          f"{task.problem}'s batch size {batch}")
    jobs = bench.make_jobs(tasks, methods, seeds, world)
    start, load = time.perf_counter(), os.getloadavg()[0]
    records = bench.run_benchmark(jobs, args.out, progress=not args.no_progress)
    rows = bench.aggregate(records)
    goals = bench.goals(rows)
    meta = {
        "description": f"{world} ranks (gloo, 127.0.0.1, 1 thread each), {seeds} seed(s); SGD "
                       "with momentum 0.9 (DGC: momentum in the hook); bytes counted from the "
                       "tensors handed to the collectives; modelled time = steps × (compute + "
                       "max(sent, received) × 8 / bandwidth), a model",
        "tasks": [vars(t) for t in tasks], "methods": methods, "seeds": seeds,
        "world_size": world, "quick": bool(args.quick),
        "load_average_start": load, "load_average_end": os.getloadavg()[0],
        "load_average_of_runs": [min(r["load_average"] for r in records),
                                 max(r["load_average"] for r in records)] if records else None,
        "runs_wall_s_total": sum(r["wall_s"] for r in records),
        "wall_s_this_invocation": time.perf_counter() - start,
    }
    paths = report.write_outputs(args.out, records, rows, goals, meta, args.figure)
    print(report.markdown_tables(rows))
    print(report.goals_text(goals))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python benchmarks/distributed_compression.py``."""
    parser = a.CommandParser(prog=_PROG, description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
