"""``descentlab compare``: a fair, resumable optimizer benchmark with an HTML report.

With no arguments it tunes and re-runs the seeds' optimizer family (GD, SGD,
momentum, Nesterov, Adagrad, RMSProp, Adadelta, Adam) on the default problem
suite, writes ``report.html``, figures, CSV and JSON into ``--out``, prints
the leaderboard and the total wall time. Running it again resumes.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from descentlab.commands import arguments as a

__all__ = ["register", "run"]


def _entrant_names() -> list[str]:
    from descentlab.bench.entrants import available_entrants

    return available_entrants()


def _problem_names() -> list[str]:
    from descentlab.problems import available_problems

    return available_problems()


def _suite_names() -> list[str]:
    from descentlab.problems import available_suites

    return available_suites()


def register(subparsers: Any) -> None:
    """Add the ``compare`` sub-command."""
    from descentlab.bench.defaults import (
        DEFAULT_SEEDS,
        DEFAULT_STALE_AFTER,
        DEFAULT_TRIALS,
        DEFAULT_WORKERS,
    )
    from descentlab.bench.entrants import SEED_FAMILY

    parser = subparsers.add_parser(
        "compare",
        help="tune and compare optimizers on a problem suite; write an HTML report",
        description=__doc__.split("\n\n")[1].replace("\n", " ").replace("``", ""),
    )
    parser.add_argument(
        "--optimizers",
        type=a.name_list(_entrant_names, "optimizer"),
        metavar="NAMES",
        help=f"comma-separated optimizer names (default: the seeds' family: "
        f"{','.join(SEED_FAMILY)})",
    )
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument(
        "--problems",
        type=a.name_list(_problem_names, "problem"),
        metavar="NAMES",
        help="comma-separated problem names (default: the default suite; see `descentlab list`)",
    )
    chosen.add_argument(
        "--suite",
        type=a.known_name(_suite_names, "suite"),
        metavar="NAME",
        help="a named problem suite instead of --problems, e.g. deep (see `descentlab list`)",
    )
    parser.add_argument(
        "--trials",
        type=a.positive_int,
        default=DEFAULT_TRIALS,
        metavar="N",
        help=f"tuning trials per problem and optimizer (default {DEFAULT_TRIALS})",
    )
    parser.add_argument(
        "--seeds",
        type=a.positive_int,
        default=DEFAULT_SEEDS,
        metavar="N",
        help=f"seeds the best setting is re-run on (default {DEFAULT_SEEDS})",
    )
    parser.add_argument(
        "--seed",
        type=a.seed,
        default=0,
        metavar="S",
        help="base seed of the sampler and the runs (default 0)",
    )
    parser.add_argument(
        "--out",
        type=a.output_folder,
        default="descentlab-compare",
        metavar="DIR",
        help="output folder: results.db, report.html, figures, CSV, JSON "
        "(default ./descentlab-compare)",
    )
    parser.add_argument(
        "--workers",
        type=a.positive_int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"worker processes on this machine (default {DEFAULT_WORKERS})",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--resume",
        dest="fresh",
        action="store_false",
        help="continue from the results in --out (the default)",
    )
    group.add_argument(
        "--fresh",
        dest="fresh",
        action="store_true",
        help="start over; the old results.db is kept as results.db.<time>.bak",
    )
    parser.add_argument(
        "--storage",
        type=a.storage_url,
        metavar="URL",
        help="Optuna storage URL of a server database (postgresql://…, "
        "mysql://…) instead of <out>/results.db",
    )
    parser.add_argument(
        "--no-prune", dest="prune", action="store_false", help="never prune tuning trials"
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no live progress bar"
    )
    parser.add_argument(
        "--stale-after",
        type=a.positive_float,
        default=DEFAULT_STALE_AFTER,
        metavar="SECONDS",
        help="with a shared --storage: take over the work of a process silent this long "
        f"(default {DEFAULT_STALE_AFTER:g})",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into an existing --out folder that descentlab did not create",
    )
    parser.set_defaults(
        func=run,
        fresh=False,
        requires=a.needs("optuna", "sqlalchemy", "sklearn", "matplotlib", "rich"),
    )


def _command_line(args: argparse.Namespace) -> str:
    """The command as run, options spelled out (a storage URL's password is hidden)."""
    from descentlab.checks import redact_url

    parts = ["descentlab compare"]
    for name in ("optimizers", "problems"):
        if getattr(args, name):
            parts.append(f"--{name} {','.join(getattr(args, name))}")
    if args.suite:
        parts.append(f"--suite {args.suite}")
    parts.append(f"--trials {args.trials} --seeds {args.seeds} --seed {args.seed}")
    parts.append(f"--workers {args.workers} --out {args.out}")
    if args.storage:
        parts.append(f"--storage {redact_url(args.storage)}")
    if not args.prune:
        parts.append("--no-prune")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Run the comparison; print the leaderboard and the wall time. Exit 2 on bad input."""
    from descentlab.bench.errors import BenchError
    from descentlab.bench.harness import compare, format_seconds

    try:
        result = compare(
            args.optimizers,
            args.problems,
            suite=args.suite,
            trials=args.trials,
            seeds=args.seeds,
            seed=args.seed,
            out=args.out,
            workers=args.workers,
            storage=args.storage,
            fresh=args.fresh,
            force=args.force,
            stale_after=args.stale_after,
            prune=args.prune,
            progress=args.progress,
            command=_command_line(args),
        )
    except BenchError as exc:
        return a.fail("descentlab compare", str(exc))
    except KeyboardInterrupt:
        print(
            "\ndescentlab compare: interrupted; finished trials and runs are saved, run the "
            "same command again to resume",
            file=sys.stderr,
        )
        return 130
    print()
    print(result.leaderboard_markdown)
    print()
    print(
        "score: AlgoPerf area under the performance profile (steps to target, τ ∈ [1, 4]) ÷ 3;"
        " time score: the same on training wall time to target (depends on the machine and"
        " its load); cells: median steps to target (— = not reached)"
    )
    for name in ("report.html", "results.json", "runs.csv"):
        if name in result.files:
            print(f"{name}: {result.files[name]}")
    elsewhere = f", {result.work_elsewhere} by other processes" if result.work_elsewhere else ""
    print(
        f"work: {result.work_done} trials+runs done now{elsewhere}, "
        f"{result.work_total - result.work_done - result.work_elsewhere} already in the store"
    )
    print(f"total wall time: {format_seconds(result.wall_time)}")
    return 0
