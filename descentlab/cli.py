"""The ``descentlab`` command.

Each sub-command lives in its own module under :mod:`descentlab.commands` and
exposes ``register(subparsers)``, which adds its parser and sets
``func=callable(args) -> int``. Sub-commands are discovered, so adding one
needs no change here.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from descentlab import commands

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every sub-command found in ``descentlab.commands``."""
    parser = argparse.ArgumentParser(
        prog="descentlab",
        description="Optimisers for deep networks: compare, diagnose, visualise.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
