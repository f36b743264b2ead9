"""Checks of user input shared by the command line and the Python APIs behind it.

Each check returns the value it accepts and otherwise raises ``ValueError``
(``TypeError`` for a value of the wrong type) with a message that names the
argument and repeats the value, e.g. ``trials must be an integer >= 1, got 0``.
With an empty ``name`` the message starts at the requirement
(``must be an integer >= 1, got 0``), so that argparse can put the option in
front of it (:mod:`descentlab.commands.arguments` wraps these checks as
argparse types).

A misspelt name gets the closest valid one (:func:`difflib.get_close_matches`):
``unknown optimizer 'adma'; did you mean 'adam'? valid names: sgd, adam, …``.

Output paths are checked without side effects beyond a probe file created and
removed at once in the nearest existing folder: the path must not be an
existing file of the other kind, and that folder must accept a new file (which
also catches read-only file systems, where permission bits say nothing to root).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_SEED",
    "check_int",
    "check_positive_int",
    "check_seed",
    "check_positive_float",
    "check_nonnegative_float",
    "check_probability",
    "suggestion",
    "check_known",
    "check_names",
    "check_output_folder",
    "check_output_file",
    "redact_url",
]

MAX_SEED = 2**63 - 1
"""Largest seed accepted anywhere (a signed 64-bit integer: torch, NumPy and databases)."""


def _fail(name: str, requirement: str, value: Any) -> ValueError:
    text = f"must be {requirement}, got {value!r}"
    return ValueError(f"{name} {text}" if name else text)


def check_int(
    value: Any, name: str = "", *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an ``int`` within ``[minimum, maximum]`` (either bound may be absent)."""
    if minimum is not None and maximum is not None:
        requirement = f"an integer in [{minimum}, {maximum}]"
    elif minimum is not None:
        requirement = f"an integer >= {minimum}"
    elif maximum is not None:
        requirement = f"an integer <= {maximum}"
    else:
        requirement = "an integer"
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise _fail(name, requirement, value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _fail(name, requirement, value)
    return value


def check_positive_int(value: Any, name: str = "") -> int:
    """``value`` as an ``int >= 1``."""
    return check_int(value, name, minimum=1)


def check_seed(value: Any, name: str = "seed", *, span: int = 1) -> int:
    """A seed ``s`` such that ``s, s + 1, …, s + span − 1`` are all in ``[0, MAX_SEED]``."""
    return check_int(value, name, minimum=0, maximum=MAX_SEED - (span - 1))


def check_positive_float(value: Any, name: str = "") -> float:
    """``value`` as a finite ``float > 0``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(name, "a finite number > 0", value)
    if not (math.isfinite(value) and value > 0):
        raise _fail(name, "a finite number > 0", value)
    return float(value)


def check_nonnegative_float(value: Any, name: str = "") -> float:
    """``value`` as a finite ``float >= 0``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(name, "a finite number >= 0", value)
    if not (math.isfinite(value) and value >= 0):
        raise _fail(name, "a finite number >= 0", value)
    return float(value)


def check_probability(
    value: Any, name: str = "", *, include_zero: bool = True, include_one: bool = True
) -> float:
    """``value`` as a ``float`` in ``[0, 1]``; the ends are included unless told otherwise."""
    interval = ("[" if include_zero else "(") + "0, 1" + ("]" if include_one else ")")
    requirement = f"a number in {interval}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise _fail(name, requirement, value)
    low_ok = value >= 0 if include_zero else value > 0
    high_ok = value <= 1 if include_one else value < 1
    if not (low_ok and high_ok):
        raise _fail(name, requirement, value)
    return float(value)


def _edits(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions, swaps."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def suggestion(value: str, valid: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for the closest valid name (case-insensitive), else ``""``.

    Candidates are :func:`difflib.get_close_matches`; among them the fewest
    edits wins (a swap of two letters counts as one), so ``adma`` → ``adam``.
    """
    lowered = {n.lower(): n for n in valid}
    text = str(value).lower()
    close = difflib.get_close_matches(text, list(lowered), n=4, cutoff=0.6)
    if not close:
        return ""
    best = min(close, key=lambda c: (_edits(text, c), close.index(c)))
    return f"did you mean {lowered[best]!r}? "


def check_known(value: Any, valid: Iterable[str], kind: str, *, ignore_case: bool = False) -> str:
    """``value`` if it is one of ``valid``; else a ``ValueError`` with a suggestion.

    ``kind`` names what is looked up (``"optimizer"``, ``"problem"``, …). With
    ``ignore_case`` the valid spelling of a name matched case-insensitively is returned.
    """
    names = list(valid)
    if isinstance(value, str) and value in names:
        return value
    if ignore_case and isinstance(value, str):
        folded = {n.lower(): n for n in names}
        if value.lower() in folded:
            return folded[value.lower()]
    raise ValueError(
        f"unknown {kind} {value!r}; {suggestion(str(value), names)}valid names: {', '.join(names)}"
    )


def check_names(
    values: str | Sequence[str], valid: Iterable[str], kind: str, *, name: str = ""
) -> list[str]:
    """A list of names (a sequence, or one comma-separated string): known, none repeated, not
    empty."""
    items = values.split(",") if isinstance(values, str) else list(values)
    names = [str(v).strip() for v in items if str(v).strip()]
    label = f"{name} " if name else ""
    if not names:
        raise ValueError(f"{label}must name at least one {kind}, got {values!r}")
    names_valid = list(valid)
    for n in names:
        check_known(n, names_valid, kind)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{kind} named more than once: {', '.join(repeated)}")
    return names


def _nearest_existing(path: Path) -> Path:
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _check_creatable_in(folder: Path, name: str, path: Path) -> None:
    label = f"{name} " if name else ""
    if not folder.is_dir():
        raise ValueError(f"{label}{str(path)!r} cannot be created: {str(folder)!r} is a file")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".descentlab-probe-"):
            pass
    except OSError as exc:
        raise ValueError(
            f"{label}{str(path)!r} is not writable ({exc.strerror or exc} in {str(folder)!r})"
        ) from None


def check_output_folder(value: str | os.PathLike[str], name: str = "") -> Path:
    """A folder that exists and accepts files, or can be created; nothing is created."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        label = f"{name} " if name else ""
        raise ValueError(f"{label}{str(path)!r} exists and is not a folder")
    _check_creatable_in(_nearest_existing(path), name, path)
    return path


def check_output_file(value: str | os.PathLike[str], name: str = "") -> Path:
    """A file path that can be written: not a folder, its folder writable or creatable."""
    path = Path(value)
    label = f"{name} " if name else ""
    if path.is_dir():
        raise ValueError(f"{label}{str(path)!r} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{label}{str(path)!r} is not writable")
    _check_creatable_in(_nearest_existing(path.parent), name, path)
    return path


def redact_url(url: str) -> str:
    """A URL with its password replaced by ``***`` (for messages, reports and logs)."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
