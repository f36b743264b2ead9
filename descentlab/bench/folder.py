"""The output folder of a comparison and the local results database file in it.

Guarantees, each checked before anything is written:

- **The folder is descentlab's.** A folder is used if it is new, empty,
  carries the lock file ``.descentlab.lock`` that descentlab leaves in every
  folder it writes, or holds nothing but a ``results.db`` (which is then
  checked like any other); a folder holding anything else (someone's own
  ``report.html``, photos, …) is refused unless ``force=True`` (``--force``).
- **One run per folder.** The lock file is locked (``fcntl.flock``) for the
  whole run. Forked worker processes close their inherited copy at once
  (``os.register_at_fork``), so the lock dies with the main process even if a
  child were to outlive it.
- **The database file is descentlab's and intact.** An existing
  ``results.db`` is opened read-only and must pass SQLite's
  ``PRAGMA quick_check`` and hold Optuna's tables plus descentlab's
  ``descentlab_store`` table. An Optuna database that descentlab did not write
  (other studies, no ``descentlab_store``) is refused and left untouched; one
  written by an earlier descentlab is refused with the way to keep or discard
  its results.
- **``--fresh`` never loses anything.** The old database is first folded
  into one self-contained file (``PRAGMA journal_mode=DELETE`` checkpoints
  the write-ahead log, which after a ``kill -9`` can hold every result since
  the last checkpoint, into the main file and removes ``-wal``/``-shm``), then
  renamed to ``results.db.<time>.bak`` in one step. A file SQLite cannot open
  is moved aside with its ``-wal`` and ``-shm`` files under the same new name.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
import weakref
from pathlib import Path

from descentlab.bench.errors import BenchError

__all__ = [
    "DB_NAME",
    "LOCK_NAME",
    "OUR_STUDY_PREFIXES",
    "FolderLock",
    "NotOurs",
    "prepare_output_folder",
    "check_database",
    "version_mix_message",
    "set_aside",
]

DB_NAME = "results.db"
LOCK_NAME = ".descentlab.lock"
OUR_STUDY_PREFIXES = ("tune:", "runs:")
_SIDE_FILES = ("-wal", "-shm", "-journal")


def prepare_output_folder(path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Create ``path`` if needed and check it is writable and descentlab's (see module doc)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise BenchError(f"output folder {str(out)!r} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise BenchError(
            f"output folder {str(out)!r} is not writable ({exc.strerror or exc}); "
            "choose another with --out"
        ) from None
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith(".write-probe-"))
    database_only = set(names) <= {DB_NAME, *(DB_NAME + s for s in _SIDE_FILES)}
    if not database_only and LOCK_NAME not in names and not force:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise BenchError(
            f"output folder {str(out)!r} holds files descentlab did not write ({shown}); "
            "choose a new folder with --out, or add --force to write into it"
        )
    return out


_HELD: weakref.WeakSet[FolderLock] = weakref.WeakSet()


def _forget_locks_in_child() -> None:
    for lock in list(_HELD):
        if lock.fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock.fd)
            lock.fd = None
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_in_child)


class FolderLock:
    """The exclusive lock on an output folder (its ``.descentlab.lock`` file)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise BenchError(
                f"another descentlab compare is running on output folder {str(folder)!r}; "
                "wait for it to finish or choose another --out"
            ) from None
        self.fd: int | None = fd
        _HELD.add(self)

    def release(self) -> None:
        """Unlock (idempotent)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        _HELD.discard(self)


class NotOurs(BenchError):
    """A database file that descentlab did not write: refused even with ``--fresh``."""


def _keep_or_discard(path: Path) -> str:
    return (
        f"to keep them, run with --out set to another folder; to discard them (they are kept "
        f"as {path.name}.<time>.bak), run with --fresh"
    )


def check_database(path: Path) -> None:
    """Check that an existing file is an intact results database of this tool (read-only).

    Accepts a missing or empty file (a new store) and an empty Optuna
    database; anything else that is not descentlab's raises :class:`BenchError`
    with the reason and the way out: :class:`NotOurs` for a database that
    someone else wrote (never moved, not even by ``--fresh``).
    """
    if not path.exists() or path.stat().st_size == 0:
        return
    hint = (
        f"the file is left untouched; move it away, or run with --fresh to start a new "
        f"database (the old one is kept as {path.name}.<time>.bak)"
    )
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            check = con.execute("PRAGMA quick_check").fetchone()
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
            studies = (
                [r[0] for r in con.execute("SELECT study_name FROM studies")]
                if "studies" in tables
                else []
            )
    except sqlite3.DatabaseError as exc:
        raise BenchError(f"results database {str(path)!r} is corrupt ({exc}); {hint}") from None
    if not check or check[0] != "ok":
        raise BenchError(f"results database {str(path)!r} is corrupt ({check}); {hint}")
    theirs = "it is left untouched: choose another folder with --out, or move it away"
    if tables and not {"studies", "trials", "version_info"} <= tables:
        raise NotOurs(
            f"{str(path)!r} is a SQLite database but not a descentlab results database "
            f"(tables: {', '.join(sorted(tables))}); {theirs}"
        )
    if "descentlab_store" in tables or not studies:
        return
    foreign = [s for s in studies if not s.startswith(OUR_STUDY_PREFIXES)]
    if foreign:
        shown = ", ".join(repr(s) for s in foreign[:3]) + (" …" if len(foreign) > 3 else "")
        raise NotOurs(
            f"{str(path)!r} is an Optuna database that descentlab did not write (studies: "
            f"{shown}); {theirs}"
        )
    raise BenchError(
        f"results database {str(path)!r} holds results of an earlier descentlab version; "
        + _keep_or_discard(path)
    )


def version_mix_message(path: Path, recorded: dict[str, str], current: dict[str, str]) -> str:
    """Why a local store written by other versions is refused, and how to keep or discard it."""

    def show(v: dict[str, str]) -> str:
        return f"descentlab {v.get('descentlab', '?')} with torch {v.get('torch', '?')}"

    return (
        f"results database {str(path)!r} holds results of {show(recorded)}, but this is "
        f"{show(current)}; results of different versions are not mixed: " + _keep_or_discard(path)
    )


def set_aside(path: Path) -> Path | None:
    """Move database ``path`` to ``<name>.<time>.bak`` without losing a committed result.

    Returns the backup's path (``None`` if there was nothing to move).
    """
    if not path.exists() and not any(path.with_name(path.name + s).exists() for s in _SIDE_FILES):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.{stamp}.bak")
    n = 1
    while backup.exists():
        n += 1
        backup = path.with_name(f"{path.name}.{stamp}-{n}.bak")
    try:
        if not path.exists():
            raise sqlite3.DatabaseError("no main database file")
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as con:
            mode = con.execute("PRAGMA journal_mode=DELETE").fetchone()
        if not mode or str(mode[0]).lower() != "delete":
            raise sqlite3.DatabaseError(f"journal mode stayed {mode}")
        if any(path.with_name(path.name + s).exists() for s in _SIDE_FILES):
            raise sqlite3.DatabaseError("the write-ahead log was not folded in")
    except sqlite3.DatabaseError:
        # not a database SQLite can open: move the files as they are, side files first, so
        # that a kill in between never leaves a log beside a database it does not belong to
        for suffix in (*_SIDE_FILES, ""):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(backup.with_name(backup.name + suffix))
        return backup
    path.rename(backup)
    return backup
