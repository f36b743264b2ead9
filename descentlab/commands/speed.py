"""``descentlab speed``: time one optimizer step for torch.optim and every descentlab engine.

The command parses its options, calls :func:`descentlab.bench.step_speed.measure`
(which documents what is measured and how) and prints the tables; the JSON
goes to ``benchmarks/results/step_speed[_quick].json`` unless ``--json`` says
otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from descentlab.bench.step_speed import (
    ALL_OPTIMIZERS,
    CASES,
    INTERLEAVED,
    PACKAGE_REFERENCES,
    format_all,
    measure,
)
from descentlab.commands import arguments as a

__all__ = ["ALL_OPTIMIZERS", "CASE_NAMES", "add_arguments", "main", "register"]

#: the cases ``--cases`` takes: the two tables and the small models
CASE_NAMES = [*CASES, "small"]


def _main(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.json or Path(
        "benchmarks/results/step_speed" + ("_quick" if args.quick else "") + ".json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)

    def save(result: dict[str, Any]) -> None:
        path.write_text(json.dumps(result, indent=1))

    result = measure(args.cases, args.optimizers, quick=args.quick, repeats=args.repeats,
                     startup=args.startup, save=save)
    save(result)
    print(format_all(result))
    print(f"wrote {path}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's command-line options (shared by the CLI and benchmarks/step_speed.py)."""
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repeats")
    parser.add_argument(
        "--cases",
        type=a.name_list(lambda: CASE_NAMES, "case"),
        default=CASE_NAMES,
        help="which cases: a (large tensors), b (many small), small (0.1M-5M-parameter "
        "models, default engine vs torch's fastest); default all",
    )
    parser.add_argument(
        "--optimizers",
        type=a.name_list(lambda: ALL_OPTIMIZERS, "optimizer"),
        help="comma-separated names (default: the torch.optim ones; also "
        + ", ".join([*PACKAGE_REFERENCES, *INTERLEAVED]) + ", timed interleaved with torch)",
    )
    parser.add_argument(
        "--repeats", type=a.positive_int, help="timed steps per variant (default 10, quick 5)"
    )
    parser.add_argument(
        "--threads", type=a.positive_int, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--startup",
        action="store_true",
        help="also time first steps and compiles in fresh processes",
    )
    parser.add_argument(
        "--json",
        type=a.output_file,
        help="where to write the JSON results (default benchmarks/results/step_speed.json)",
    )


def register(subparsers: Any) -> None:
    """Add ``descentlab speed``."""
    parser = subparsers.add_parser(
        "speed",
        help="time optimizer steps: torch.optim vs our engines",
        description=__doc__.splitlines()[0],
    )
    add_arguments(parser)
    parser.set_defaults(func=_main, requires=a.needs("tqdm"))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python benchmarks/step_speed.py``."""
    parser = a.CommandParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return _main(parser.parse_args(argv))
