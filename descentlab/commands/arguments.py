"""Argument checking shared by every ``descentlab`` sub-command.

Every command is a thin *parse → call → print*. Parsing is where bad input
stops: the argparse types below wrap :mod:`descentlab.checks`, so a bad value
ends the command at once with exit status 2 and one line on stderr that names
the argument and the value, before any work starts::

    descentlab diagnose: error: argument --steps: must be an integer >= 1, got 0
    descentlab compare: error: argument --optimizers: unknown optimizer 'adma'; did you mean
    'adam'? valid names: …   (one line)

:class:`CommandParser` prints argparse's own errors in the same one-line form
and adds "did you mean" to invalid choices and unknown options. Commands
declare the optional packages they need with :func:`needs`; the command line
checks them before running and names the extra that brings them
(``pip install 'descentlab[bench]'``). Exit codes: 0 done, 1 reserved for
"a finding was found" (``diagnose --fail-on``), 2 the command could not start
(bad argument, missing package), 130 interrupted.

Usage in a command module::

    from descentlab.commands import arguments as a

    p.add_argument("--steps", type=a.positive_int, default=200)
    p.add_argument("--optimizer", type=a.known_name(optimizer_names, "optimizer"))
    p.add_argument("--out", type=a.output_folder)
    p.set_defaults(func=run, requires=a.needs("matplotlib"))
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

from descentlab import checks

__all__ = [
    "EXTRAS",
    "CommandParser",
    "fail",
    "needs",
    "missing_requirements",
    "missing_package_message",
    "positive_int",
    "int_at_least",
    "seed",
    "positive_float",
    "nonnegative_float",
    "probability",
    "fraction",
    "known_name",
    "name_list",
    "output_folder",
    "output_file",
    "storage_url",
]

EXTRAS: dict[str, str] = {
    "optuna": "bench",
    "sqlalchemy": "bench",
    "sklearn": "bench",
    "matplotlib": "bench",
    "rich": "bench",
    "tqdm": "bench",
    "psycopg": "postgresql",
    "psycopg2": "postgresql",
    "scipy": "test",
    "tensorboard": "test",
}
"""Optional top-level packages and the ``descentlab[...]`` extra that installs each."""

_PIP_NAMES = {"sklearn": "scikit-learn", "psycopg": "psycopg[binary]"}

_ACTIVE: list[argparse.ArgumentParser] = []


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line with a suggestion, exit status 2."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # noqa: D102
        _ACTIVE[:] = [self]  # the innermost parser parses last: its options are the ones meant
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` (plus a suggestion) on one line and exit 2."""
        choice = re.search(r"invalid choice: '?([^'\s]*)'? \(choose from (.*)\)", message)
        if choice:
            valid = [c.strip(" '\"") for c in choice.group(2).split(",")]
            hint = checks.suggestion(choice.group(1), valid).rstrip()
            message = message.replace(" (choose", f"; {hint} (choose" if hint else " (choose", 1)
        elif message.startswith("unrecognized arguments:"):
            parser = _ACTIVE[-1] if _ACTIVE else self
            options = [o for o in parser._option_string_actions if o.startswith("--")]
            words = message.split(":", 1)[1].split()
            unknown = next((w.split("=")[0] for w in words if w.startswith("--")), None)
            hint = checks.suggestion(unknown, options).rstrip(" ?") if unknown else ""
            if hint:
                message += f" ({hint}?)"
            self = parser
        fail(self.prog, message)
        sys.exit(2)


def fail(prog: str, message: str) -> int:
    """Print ``prog: error: message`` as one line on stderr; return exit status 2."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def needs(*modules: str) -> tuple[str, ...]:
    """The optional top-level packages a command imports (for ``set_defaults(requires=...)``)."""
    unknown = [m for m in modules if m not in EXTRAS]
    if unknown:
        raise ValueError(f"no extra is known to install {unknown}; add them to EXTRAS")
    return modules


def missing_requirements(modules: Iterable[str]) -> list[str]:
    """Those of ``modules`` that cannot be imported here."""

    def missing(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except ImportError:  # a finder that refuses the name outright
            return True

    return [m for m in modules if missing(m)]


def missing_package_message(modules: Iterable[str]) -> str:
    """``"needs optuna, which is not installed: pip install 'descentlab[bench]'"``."""
    names = list(dict.fromkeys(modules))
    extras = sorted({EXTRAS[m] for m in names if m in EXTRAS})
    shown = ", ".join(_PIP_NAMES.get(m, m) for m in names)
    which = "which is" if len(names) == 1 else "which are"
    fix = " ".join(f"'descentlab[{e}]'" for e in extras) if extras else shown
    return f"needs {shown}, {which} not installed: pip install {fix}"


def _typed(convert: Callable[[str], Any], check: Callable[[Any], Any], what: str) -> Callable:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        try:
            return check(value)
        except (ValueError, TypeError) as exc:
            message = str(exc)
            if message.endswith(f"got {value!r}"):  # show the value as it was typed
                message = message[: -len(repr(value))] + repr(text)
            raise argparse.ArgumentTypeError(message) from None

    parse.__name__ = what
    return parse


positive_int = _typed(int, checks.check_positive_int, "an integer >= 1")
"""argparse type: an integer ``>= 1``."""

seed = _typed(int, lambda v: checks.check_seed(v, ""), "an integer seed")
"""argparse type: a seed in ``[0, 2**63 - 1]``."""

positive_float = _typed(float, checks.check_positive_float, "a finite number > 0")
"""argparse type: a finite number ``> 0``."""

nonnegative_float = _typed(float, checks.check_nonnegative_float, "a finite number >= 0")
"""argparse type: a finite number ``>= 0``."""

probability = _typed(float, checks.check_probability, "a number in [0, 1]")
"""argparse type: a number in ``[0, 1]``."""

fraction = _typed(
    float, lambda v: checks.check_probability(v, include_zero=False), "a number in (0, 1]"
)
"""argparse type: a number in ``(0, 1]`` (a share of a budget)."""


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer ``>= minimum``."""
    return _typed(
        int, lambda v: checks.check_int(v, minimum=minimum), f"an integer >= {minimum}"
    )


def known_name(
    valid: Callable[[], Iterable[str]], kind: str, *, ignore_case: bool = False
) -> Callable[[str], str]:
    """argparse type: one of ``valid()`` (called when parsing), with "did you mean"."""
    return _typed(
        str,
        lambda v: checks.check_known(v, valid(), kind, ignore_case=ignore_case),
        f"a known {kind}",
    )


def name_list(valid: Callable[[], Iterable[str]], kind: str) -> Callable[[str], list[str]]:
    """argparse type: comma-separated names from ``valid()``, none repeated."""
    return _typed(str, lambda v: checks.check_names(v, valid(), kind), f"{kind} names")


output_folder = _typed(Path, checks.check_output_folder, "a folder")
"""argparse type: a folder that exists and is writable, or can be created (nothing is created)."""

output_file = _typed(Path, checks.check_output_file, "a file path")
"""argparse type: a file that can be written (its folder exists or can be created)."""

_DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")


def _check_storage_url(text: str) -> str:
    match = re.fullmatch(r"([A-Za-z][A-Za-z0-9]*)(\+[A-Za-z0-9_]+)?://(.*)", text, re.DOTALL)
    if not match:
        raise ValueError(
            f"must be a database URL such as postgresql://user:password@host/db or "
            f"sqlite:///path.db, got {checks.redact_url(text)!r}"
        )
    shown = checks.redact_url(text)
    dialect = match.group(1).lower()
    if dialect not in _DIALECTS:
        raise ValueError(
            f"unknown database {match.group(1)!r} in {shown!r}; "
            f"{checks.suggestion(dialect, _DIALECTS)}valid: {', '.join(_DIALECTS)}"
        )
    if dialect == "sqlite" and not match.group(3).startswith("/"):
        raise ValueError(f"a SQLite URL needs a file path, sqlite:///path.db, got {shown!r}")
    if dialect != "sqlite" and not match.group(3).split("/")[0].split("@")[-1]:
        raise ValueError(f"a {dialect} URL needs a host, {dialect}://user@host/db, got {shown!r}")
    return text


storage_url = _typed(str, _check_storage_url, "a database URL")
"""argparse type: a SQLAlchemy database URL of a known dialect (connection is tried later)."""
