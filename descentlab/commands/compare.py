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

__all__ = ["register", "run"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (at least 1), got {text!r}")
    return value


def register(subparsers: Any) -> None:
    """Add the ``compare`` sub-command."""
    from descentlab.bench.defaults import DEFAULT_SEEDS, DEFAULT_TRIALS, DEFAULT_WORKERS

    parser = subparsers.add_parser(
        "compare",
        help="tune and compare optimizers on a problem suite; write an HTML report",
        description=__doc__.split("\n\n")[1].replace("\n", " ").replace("``", ""),
    )
    parser.add_argument(
        "--optimizers",
        metavar="NAMES",
        help="comma-separated optimizer names (default: the seeds' family: "
        "gd,sgd,momentum,nesterov,adagrad,rmsprop,adadelta,adam)",
    )
    parser.add_argument(
        "--problems",
        metavar="NAMES",
        help="comma-separated problem names (default: the default suite; see `descentlab list`)",
    )
    parser.add_argument(
        "--trials",
        type=_positive_int,
        default=DEFAULT_TRIALS,
        metavar="N",
        help=f"tuning trials per problem and optimizer (default {DEFAULT_TRIALS})",
    )
    parser.add_argument(
        "--seeds",
        type=_positive_int,
        default=DEFAULT_SEEDS,
        metavar="N",
        help=f"seeds the best setting is re-run on (default {DEFAULT_SEEDS})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="base seed of the sampler and the runs (default 0)",
    )
    parser.add_argument(
        "--out",
        default="descentlab-compare",
        metavar="DIR",
        help="output folder: results.db, report.html, figures, CSV, JSON "
        "(default ./descentlab-compare)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
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
    parser.set_defaults(func=run, fresh=False)


def _command_line(args: argparse.Namespace) -> str:
    """The command as run, options spelled out (a storage URL's password is hidden)."""
    from descentlab.bench.store import redact_url

    parts = ["descentlab compare"]
    for name in ("optimizers", "problems"):
        if getattr(args, name):
            parts.append(f"--{name} {getattr(args, name)}")
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
            trials=args.trials,
            seeds=args.seeds,
            seed=args.seed,
            out=args.out,
            workers=args.workers,
            storage=args.storage,
            fresh=args.fresh,
            prune=args.prune,
            progress=args.progress,
            command=_command_line(args),
        )
    except BenchError as exc:
        print(f"descentlab compare: error: {exc}", file=sys.stderr)
        return 2
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
        " cells: median steps to target (— = not reached)"
    )
    for name in ("report.html", "results.json", "runs.csv"):
        if name in result.files:
            print(f"{name}: {result.files[name]}")
    print(
        f"work: {result.work_done} trials+runs done now, "
        f"{result.work_total - result.work_done} already in the store"
    )
    print(f"total wall time: {format_seconds(result.wall_time)}")
    return 0
