"""The results store: every finished trial and run, saved as it finishes.

Storage is Optuna's relational storage (SQLAlchemy): by default the SQLite
file ``results.db`` in the output folder, or any server database given as an
Optuna storage URL (``postgresql://…``) for sweeps on several machines. Two
kinds of study live there:

- a *tuning* study per (problem, entrant, protocol, versions): one Optuna
  trial per tuning slot; Optuna writes a trial's final state, value and
  attributes in one transaction when it is told the result;
- a *runs* study per (problem, entrant, protocol, versions, trial budget): one
  trial per seed of the re-run of the best setting, inserted complete in a
  single transaction (``Study.add_trial``) once the run has finished.

Beside them, two small tables of descentlab's: the claim board that lets any
number of processes share the work (:mod:`descentlab.bench.claims`) and
``descentlab_store`` (format; for a local store, the descentlab and torch
versions whose results it holds: results of other versions are refused, with
the way to keep or discard them).

Only ``COMPLETE`` and ``PRUNED`` trials count as finished. A process killed
(even with ``kill -9``) mid-trial leaves a ``RUNNING`` trial and a claim
behind; the trial is never reported. In the local store, whose folder lock
proves no one else is running, both are cleared when the store is opened
again (the trial is marked ``FAIL``); on a shared database another process
takes the claim over once its owner has been silent for ``stale_after``
seconds and marks the trial failed. Budgets count only finished trials, so the
work is done again exactly once. SQLite's write-ahead log and PostgreSQL's
transactions make every write all-or-nothing, so a kill never leaves a
half-written result. The folder and the database file are checked before
anything is written (:mod:`descentlab.bench.folder`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from descentlab.bench.claims import STORE_INFO, ClaimBoard, clear_claims, create_tables
from descentlab.bench.defaults import DEFAULT_STALE_AFTER
from descentlab.bench.errors import BenchError
from descentlab.bench.folder import (
    DB_NAME,
    OUR_STUDY_PREFIXES,
    FolderLock,
    NotOurs,
    check_database,
    prepare_output_folder,
    set_aside,
    version_mix_message,
)
from descentlab.bench.runner import RunRecord
from descentlab.checks import redact_url

__all__ = [
    "DB_NAME",
    "DEFAULT_STALE_AFTER",
    "ResultStore",
    "json_safe",
    "code_versions",
    "engine_url",
]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
FORMAT = "2"

def code_versions() -> dict[str, str]:
    """The versions results are keyed by: descentlab's and torch's."""
    import torch

    import descentlab

    return {"descentlab": descentlab.__version__, "torch": torch.__version__}


def json_safe(value: Any) -> Any:
    """Replace non-finite floats by ``None`` (strict JSON has no NaN or infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


_NO_POSTGRES_DRIVER = "the PostgreSQL driver is not installed: pip install 'descentlab[postgresql]'"


def engine_url(url: str) -> str:
    """``url`` with an installed driver named: ``postgresql://`` becomes ``postgresql+psycopg://``.

    SQLAlchemy's default PostgreSQL driver changed between versions (psycopg2,
    then psycopg 3); naming the one that is installed (psycopg 3 first, as in
    the ``postgresql`` extra) makes plain ``postgresql://`` URLs work with both.
    """
    import importlib.util

    if not url.startswith(("postgresql://", "postgres://")):
        return url
    rest = url.split("://", 1)[1]
    for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"{dialect}://{rest}"
    raise BenchError(f"cannot open results storage {redact_url(url)!r}: {_NO_POSTGRES_DRIVER}")


def _driver_hint(exc: ImportError) -> str:
    """What to install when SQLAlchemy cannot import a database driver."""
    cause = exc if isinstance(exc, ModuleNotFoundError) else exc.__cause__
    name = (getattr(cause, "name", None) or "").split(".")[0]
    if name in ("psycopg", "psycopg2"):
        return _NO_POSTGRES_DRIVER
    return f"its database driver is not installed ({cause or exc})"


class ResultStore:
    """Access to the results database; picklable, so worker processes reopen it.

    Use :meth:`open` in the main process (checks, lock, stale-work clean-up);
    workers get the store by pickling and connect lazily.
    """

    def __init__(self, url: str, *, local: bool, stale_after: float = DEFAULT_STALE_AFTER) -> None:
        self.url = url
        self.local = local
        self.stale_after = float(stale_after)
        self._storage: optuna.storages.RDBStorage | None = None
        self._lock: FolderLock | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "local": self.local, "stale_after": self.stale_after}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["url"], local=state["local"], stale_after=state["stale_after"]
        )

    @classmethod
    def open(
        cls,
        out_dir: str | os.PathLike[str],
        storage: str | None = None,
        *,
        fresh: bool = False,
        force: bool = False,
        stale_after: float = DEFAULT_STALE_AFTER,
    ) -> ResultStore:
        """Open (or create) the store for output folder ``out_dir``.

        ``storage`` is an Optuna storage URL; by default ``sqlite:///<out>/results.db``.
        ``fresh=True`` moves an existing local database aside first; ``force=True``
        accepts an output folder that descentlab did not create.
        """
        if not (math.isfinite(stale_after) and stale_after > 0):
            raise BenchError(f"stale_after must be a finite number > 0, got {stale_after!r}")
        if storage is not None:
            if fresh:
                raise BenchError(
                    "--fresh only applies to the local database; to start over on a server "
                    "database, point --storage at a new database"
                )
            server = cls(storage, local=False, stale_after=stale_after)
            server.connect()  # a bad URL fails before anything is written in the folder
        out = prepare_output_folder(out_dir, force=force)
        lock = FolderLock(out)
        try:
            if storage is None:
                path = out / DB_NAME
                if fresh:
                    try:
                        check_database(path)
                    except NotOurs:
                        raise  # someone else's database is never moved, not even by --fresh
                    except BenchError:
                        pass  # corrupt, or an earlier format: set aside below
                    set_aside(path)
                check_database(path)
                store = cls(f"sqlite:///{path.resolve()}", local=True, stale_after=stale_after)
            else:
                store = server
            store._lock = lock
            store._prepare(path if storage is None else None)
        except BaseException:
            lock.release()
            raise
        return store

    def _prepare(self, local_path: Path | None) -> None:
        """Connect, create descentlab's tables, check versions, clear stale local work."""
        engine = self.storage.engine
        try:
            create_tables(engine)
            with engine.connect() as con:
                info = dict(con.execute(sa.select(STORE_INFO.c.key, STORE_INFO.c.value)).all())
        except sa.exc.SQLAlchemyError as exc:
            raise BenchError(
                f"cannot use results storage {redact_url(self.url)!r}: {redact_url(str(exc))}"
            ) from None
        current = code_versions()
        facts = {"format": FORMAT}
        if local_path is not None:
            recorded = json.loads(info.get("versions", "null"))
            ours = [
                s
                for s in self.storage.get_all_studies()
                if s.study_name.startswith(OUR_STUDY_PREFIXES)
            ]
            if recorded is not None and recorded != current and ours:
                raise BenchError(version_mix_message(local_path, recorded, current))
            facts["versions"] = json.dumps(current, sort_keys=True)
        with engine.begin() as con:
            for key, value in facts.items():
                if info.get(key) == value:
                    continue
                if key in info:
                    con.execute(
                        STORE_INFO.update().where(STORE_INFO.c.key == key).values(value=value)
                    )
                else:
                    con.execute(STORE_INFO.insert().values(key=key, value=value))
        if self.local:
            self.fail_stale()

    def close(self) -> None:
        """Release the folder lock and the database connections."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self.disconnect()

    def disconnect(self) -> None:
        """Close the database connections (reconnected on next use); the lock is kept."""
        if self._storage is not None:
            self._storage.remove_session()
            self._storage.engine.dispose()
            self._storage = None

    def connect(self) -> None:
        """Connect now (raises :class:`BenchError` naming the storage if it cannot be used)."""
        self.storage.get_all_studies()

    @property
    def storage(self) -> optuna.storages.RDBStorage:
        """The Optuna storage (connected on first use, in this process)."""
        if self._storage is None:
            kwargs: dict[str, Any] = {}
            if self.url.startswith("sqlite"):
                kwargs["engine_kwargs"] = {"creator": self._connect_sqlite}
            else:
                kwargs["engine_kwargs"] = {"pool_pre_ping": True}
            for attempt in range(5):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                        self._storage = optuna.storages.RDBStorage(
                            engine_url(self.url), **kwargs
                        )
                    break
                except ImportError as exc:  # Optuna re-raises the driver's as an ImportError
                    reason = _driver_hint(exc)
                except Exception as exc:  # SQLAlchemy/driver errors: report, do not trace
                    reason = redact_url(str(exc).strip().splitlines()[0] if str(exc) else repr(exc))
                    # several processes creating Optuna's tables at once: the others win
                    racing = isinstance(exc, sa.exc.IntegrityError) or "already exists" in reason
                    if racing and attempt < 4:
                        time.sleep(0.3 * (attempt + 1))
                        continue
                raise BenchError(
                    f"cannot open results storage {redact_url(self.url)!r}: {reason}"
                ) from None
        assert self._storage is not None
        return self._storage

    def _connect_sqlite(self) -> sqlite3.Connection:
        """Connection to a SQLite file: WAL journal, ``synchronous=NORMAL``, 2-min busy wait.

        WAL with ``synchronous=NORMAL`` keeps every transaction atomic and
        durable across a killed process (only a power cut may roll back the
        last transactions), and commits without an fsync each, which makes
        writing a trial about a hundred times cheaper than the default.
        """
        path = sa.engine.make_url(self.url).database or ""
        con = sqlite3.connect(path, timeout=120, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    def claim_board(self) -> ClaimBoard:
        """A claim board for this process (use it as a context manager while working)."""
        return ClaimBoard(self.storage.engine, self.stale_after)

    def fail_stale(self) -> int:
        """Local store only: mark trials left ``RUNNING`` as ``FAIL`` and drop every claim.

        The folder lock proves that no other process is running. On a shared
        server database a ``RUNNING`` trial may belong to another machine, so
        nothing is touched here (claims of dead processes are taken over).
        Only descentlab's studies are looked at. Returns how many trials failed.
        """
        if not self.local:
            return 0
        storage = self.storage
        count = 0
        for summary in storage.get_all_studies():
            if not summary.study_name.startswith(OUR_STUDY_PREFIXES):
                continue
            for trial in storage.get_all_trials(
                summary._study_id, deepcopy=False, states=(TrialState.RUNNING,)
            ):
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                count += 1
        clear_claims(storage.engine)
        return count

    def fail_running(self, studies: set[str]) -> None:
        """Mark the ``RUNNING`` trials of ``studies`` ``FAIL`` (left by processes that died)."""
        for name in studies:
            try:
                study_id = self.storage.get_study_id_from_name(name)
            except KeyError:
                continue
            for trial in self.storage.get_all_trials(
                study_id, deepcopy=False, states=(TrialState.RUNNING,)
            ):
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)

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
        """Finished (complete or pruned) trials of study ``name`` in trial order; [] if none.

        A tuning slot finished twice (possible only if a stalled process lost its
        claim in the instant it wrote its result) counts once: the first.
        """
        try:
            study_id = self.storage.get_study_id_from_name(name)
        except KeyError:
            return []
        trials = self.storage.get_all_trials(study_id, states=FINISHED)
        trials.sort(key=lambda t: t.number)
        seen: set[int] = set()
        out = []
        for trial in trials:
            slot = trial.user_attrs.get("slot")
            if slot is not None:
                if slot in seen:
                    continue
                seen.add(slot)
            out.append(trial)
        return out

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
