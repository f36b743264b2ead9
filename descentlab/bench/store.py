"""The results store: every finished trial and run, saved as it finishes.

Storage is Optuna's relational storage (SQLAlchemy): by default the SQLite
file ``results.db`` in the output folder, or any server database given as an
Optuna storage URL (``postgresql://…``, ``mysql://…``) for sweeps on several
machines. Two kinds of study live there:

- a *tuning* study per (problem, entrant, protocol): one Optuna trial per
  hyperparameter setting tried; Optuna writes a trial's final state, value and
  attributes in one transaction when it is told the result;
- a *runs* study per (problem, entrant, protocol, trial budget): one trial per
  seed of the re-run of the best setting, inserted complete in a single
  transaction (``Study.add_trial``) once the run has finished.

Only ``COMPLETE`` and ``PRUNED`` trials count as finished. A process killed
(even with ``kill -9``) mid-trial leaves a ``RUNNING`` trial behind; it is
never reported, is marked ``FAIL`` when the local store is opened again (the folder lock
proves no one else is running; on a shared server database it stays
``RUNNING`` and is ignored), and the budget counts only finished trials, so
the work is done again exactly once.
SQLite's journal makes every transaction all-or-nothing, so a kill can never
leave a half-written result.

Safety of existing results: the folder must be writable (checked with a probe
file before anything starts); an existing database is checked with SQLite's
``PRAGMA quick_check`` in read-only mode and must hold Optuna's tables before
it is opened for writing; ``--fresh`` moves the old database aside
(``results.db.<time>.bak``), it never deletes it; a lock file
(``fcntl.flock``) stops two runs from sharing one folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from descentlab.bench.errors import BenchError
from descentlab.bench.runner import RunRecord

__all__ = [
    "DB_NAME",
    "ResultStore",
    "check_output_dir",
    "check_database",
    "json_safe",
    "redact_url",
]

DB_NAME = "results.db"
LOCK_NAME = ".descentlab.lock"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def redact_url(url: str) -> str:
    """A storage URL with its password replaced by ``***`` (for messages and reports)."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def json_safe(value: Any) -> Any:
    """Replace non-finite floats by ``None`` (strict JSON has no NaN or infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and check a file can be written in it.

    Raises :class:`BenchError` naming the folder if it cannot be created or
    written (a probe file is created and removed; nothing else is touched).
    """
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
    return out


def check_database(path: Path) -> None:
    """Check that an existing file is an intact SQLite database of this tool.

    Opens it read-only (nothing is written). Accepts a missing or empty file
    (a new store) and a database with Optuna's tables; anything else raises
    :class:`BenchError` with the reason and the way out.
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
    except sqlite3.DatabaseError as exc:
        raise BenchError(f"results database {str(path)!r} is corrupt ({exc}); {hint}") from None
    if not check or check[0] != "ok":
        raise BenchError(f"results database {str(path)!r} is corrupt ({check}); {hint}")
    if tables and not {"studies", "trials", "version_info"} <= tables:
        raise BenchError(
            f"{str(path)!r} is a SQLite database but not a descentlab results database "
            f"(tables: {', '.join(sorted(tables))}); {hint}"
        )


class ResultStore:
    """Access to the results database; picklable, so worker processes reopen it.

    Use :meth:`open` in the main process (checks, lock, stale-trial clean-up);
    workers get the store by pickling and connect lazily.
    """

    def __init__(self, url: str, *, local: bool) -> None:
        self.url = url
        self.local = local
        self._storage: optuna.storages.RDBStorage | None = None
        self._lock_fd: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "local": self.local}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], local=state["local"])  # type: ignore[misc]

    @classmethod
    def open(
        cls, out_dir: str | os.PathLike[str], storage: str | None = None, *, fresh: bool = False
    ) -> ResultStore:
        """Open (or create) the store for output folder ``out_dir``.

        ``storage`` is an Optuna storage URL; by default ``sqlite:///<out>/results.db``.
        ``fresh=True`` moves an existing local database aside first.
        """
        out = check_output_dir(out_dir)
        lock_fd = cls._lock(out)
        try:
            if storage is None:
                path = out / DB_NAME
                if fresh and path.exists():
                    stamp = time.strftime("%Y%m%d-%H%M%S")
                    path.rename(out / f"{DB_NAME}.{stamp}.bak")
                check_database(path)
                store = cls(f"sqlite:///{path.resolve()}", local=True)
            else:
                if fresh:
                    raise BenchError(
                        "--fresh only applies to the local database; to start over on a server "
                        "database, point --storage at a new database"
                    )
                store = cls(storage, local=False)
            store._lock_fd = lock_fd
            store.storage.get_all_studies()  # connect now: a bad URL fails before any work
            store.fail_stale()
        except BaseException:
            os.close(lock_fd)
            raise
        return store

    @staticmethod
    def _lock(out: Path) -> int:
        fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise BenchError(
                f"another descentlab compare is running on output folder {str(out)!r}; "
                "wait for it to finish or choose another --out"
            ) from None
        return fd

    def close(self) -> None:
        """Release the folder lock and the database connections."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._storage is not None:
            self._storage.remove_session()
            self._storage.engine.dispose()
            self._storage = None

    @property
    def storage(self) -> optuna.storages.RDBStorage:
        """The Optuna storage (connected on first use, in this process)."""
        if self._storage is None:
            kwargs: dict[str, Any] = {}
            if self.local:
                kwargs["engine_kwargs"] = {"creator": self._connect_sqlite}
            elif self.url.startswith("sqlite"):
                kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self._storage = optuna.storages.RDBStorage(self.url, **kwargs)
            except Exception as exc:  # SQLAlchemy/driver errors: report, do not trace
                raise BenchError(
                    f"cannot open results storage {redact_url(self.url)!r}: {redact_url(str(exc))}"
                ) from None
        return self._storage

    def _connect_sqlite(self) -> sqlite3.Connection:
        """Connection to the local database: WAL journal, ``synchronous=NORMAL``, 2-min busy wait.

        WAL with ``synchronous=NORMAL`` keeps every transaction atomic and
        durable across a killed process (only a power cut may roll back the
        last transactions), and commits without an fsync each, which makes
        writing a trial about a hundred times cheaper than the default.
        """
        path = self.url[len("sqlite:///") :]
        con = sqlite3.connect(path, timeout=120, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    def fail_stale(self) -> int:
        """Mark trials left ``RUNNING`` by killed processes as ``FAIL``; return how many.

        Only for the local database, whose folder lock proves that no other
        process is running. On a shared server database a ``RUNNING`` trial may
        belong to another machine, so it is left alone: it is never reported,
        does not count toward a budget, and the sampler ignores it.
        """
        if not self.local:
            return 0
        storage = self.storage
        count = 0
        for summary in storage.get_all_studies():
            for trial in storage.get_all_trials(
                summary._study_id, deepcopy=False, states=(TrialState.RUNNING,)
            ):
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                count += 1
        return count

    def study(
        self,
        name: str,
        direction: str,
        sampler: optuna.samplers.BaseSampler | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
    ) -> optuna.Study:
        """Create or load study ``name``."""
        return optuna.create_study(
            study_name=name,
            storage=self.storage,
            direction=direction,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )

    def finished_trials(self, name: str) -> list[FrozenTrial]:
        """Finished (complete or pruned) trials of study ``name`` in trial order; [] if none."""
        try:
            study_id = self.storage.get_study_id_from_name(name)
        except KeyError:
            return []
        trials = self.storage.get_all_trials(study_id, states=FINISHED)
        return sorted(trials, key=lambda t: t.number)

    def add_run(self, name: str, direction: str, record: RunRecord, value: float) -> None:
        """Insert one finished seed run into runs study ``name`` (one transaction)."""
        study = self.study(name, direction)
        study.add_trial(
            optuna.trial.create_trial(
                value=value,
                user_attrs={"seed": record.seed, "record": json.dumps(json_safe(record.to_dict()))},
            )
        )

    def runs(self, name: str) -> dict[int, RunRecord]:
        """Finished seed runs of runs study ``name`` by seed (first one wins)."""
        out: dict[int, RunRecord] = {}
        for trial in self.finished_trials(name):
            seed = int(trial.user_attrs["seed"])
            if seed not in out:
                out[seed] = RunRecord.from_dict(json.loads(trial.user_attrs["record"]))
        return out
