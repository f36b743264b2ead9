"""The ``descentlab`` command.

Each sub-command lives in its own module under :mod:`descentlab.commands` and
exposes ``register(subparsers)``, which adds its parser and sets
``func=callable(args) -> int`` (and ``requires=needs(...)`` for the optional
packages it imports). Sub-commands are discovered, so adding one needs no
change here. Shared argument checks live in :mod:`descentlab.commands.arguments`.

Exit status: 0 done; 1 a finding was found (``diagnose --fail-on``); 2 the
command could not start (a bad argument, a missing optional package), always
as one line on stderr; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from descentlab import commands
from descentlab.commands.arguments import (
    EXTRAS,
    CommandParser,
    fail,
    missing_package_message,
    missing_requirements,
)

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every sub-command found in ``descentlab.commands``."""
    parser = CommandParser(
        prog="descentlab",
        description="Optimisers for deep networks: compare, diagnose, visualise.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    prog = f"descentlab {args.command}"
    missing = missing_requirements(getattr(args, "requires", ()))
    if missing:
        return fail(prog, f"this command {missing_package_message(missing)}")
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in EXTRAS:
            raise
        return fail(prog, f"this command {missing_package_message([top])}")


if __name__ == "__main__":
    sys.exit(main())
