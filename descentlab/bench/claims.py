"""Claims on work items, shared by every process that uses one results store.

A comparison is a set of work items: tuning trial ``n`` of a (problem,
entrant) study, and each seed of its re-runs. Every process that takes part,
worker processes on one machine and ``descentlab compare`` processes on other
machines alike, picks items through this board, so that no item is run twice
and each is run by whoever is free.

The board is one table, ``descentlab_claims``, in the results database beside
Optuna's tables (SQLAlchemy Core, so the same on SQLite and PostgreSQL). A row
``(study, item, owner, beat)`` says that process ``owner`` runs ``item`` of
``study``:

- **claim**: ``INSERT`` the row; the primary key ``(study, item)`` lets exactly
  one process succeed;
- **heartbeat**: a thread of the owner adds 1 to ``beat`` of its rows every
  ``stale_after / 6`` seconds;
- **take over**: a row whose ``(owner, beat)`` has not changed for
  ``stale_after`` seconds *on the observer's clock* belongs to a dead process;
  the observer takes it with ``UPDATE … WHERE owner = old AND beat = old``,
  which succeeds for one observer only. No clocks are compared across
  machines;
- **finish**: before its result is written, the owner confirms the row is
  still its own (``UPDATE … WHERE owner = me``); a process that lost its claim
  (it stalled for longer than ``stale_after``) discards its result instead;
  then the row is deleted.

Claims only decide *who* runs an item; *what* the item computes depends only
on the finished results before it (see :mod:`descentlab.bench.protocol`), so
any number of processes produce the results one process would.

A second table, ``descentlab_store``, holds key/value facts about the store
(format, the versions that wrote a local store).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

__all__ = ["ClaimBoard", "TABLES", "CLAIMS", "STORE_INFO", "create_tables", "clear_claims"]

TABLES = sa.MetaData()

CLAIMS = sa.Table(
    "descentlab_claims",
    TABLES,
    sa.Column("study", sa.String(512), primary_key=True),
    sa.Column("item", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("beat", sa.BigInteger, nullable=False),
)

STORE_INFO = sa.Table(
    "descentlab_store",
    TABLES,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def create_tables(engine: sa.Engine) -> None:
    """Create the two tables if missing (safe when several processes do it at once)."""
    for attempt in range(5):
        try:
            TABLES.create_all(engine, checkfirst=True)
            return
        except (IntegrityError, OperationalError, ProgrammingError):
            # another process created them between our check and our CREATE
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


class ClaimBoard:
    """This process's view of the claims table (one owner id per process).

    Use as a context manager around the work: it starts and stops the
    heartbeat thread.
    """

    def __init__(self, engine: sa.Engine, stale_after: float) -> None:
        self.engine = engine
        self.stale_after = float(stale_after)
        self.owner = uuid.uuid4().hex
        self._seen: dict[tuple[str, int], tuple[str, int, float]] = {}
        self.orphans: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- heartbeat ---------------------------------------------------------------------------
    def __enter__(self) -> ClaimBoard:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="descentlab-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _beat(self) -> None:
        interval = max(0.2, self.stale_after / 6)
        while not self._stop.wait(interval):
            try:
                with self.engine.begin() as con:
                    con.execute(
                        CLAIMS.update()
                        .where(CLAIMS.c.owner == self.owner)
                        .values(beat=CLAIMS.c.beat + 1)
                    )
            except Exception:  # a busy or lost connection: try again next time
                continue

    # -- claims ------------------------------------------------------------------------------
    def claim(self, study: str, item: int) -> bool:
        """Try to take ``item`` of ``study``; ``False`` while a live process holds it.

        When a dead owner's claim is taken over, ``study`` is added to
        :attr:`orphans`: its ``RUNNING`` trial, if any, was the dead owner's (a
        tuning study has one ready slot at a time), for the caller to mark failed.
        """
        try:
            with self.engine.begin() as con:
                con.execute(
                    CLAIMS.insert().values(study=study, item=item, owner=self.owner, beat=0)
                )
            return True
        except IntegrityError:
            pass
        with self.engine.connect() as con:
            row = con.execute(
                sa.select(CLAIMS.c.owner, CLAIMS.c.beat).where(
                    (CLAIMS.c.study == study) & (CLAIMS.c.item == item)
                )
            ).first()
        if row is None:  # released in the meantime
            return False
        if row.owner == self.owner:
            return True
        key, now = (study, item), time.monotonic()
        seen = self._seen.get(key)
        if seen is None or seen[:2] != (row.owner, row.beat):
            self._seen[key] = (row.owner, row.beat, now)
            return False
        if now - seen[2] < self.stale_after:
            return False
        with self.engine.begin() as con:
            taken = con.execute(
                CLAIMS.update()
                .where(
                    (CLAIMS.c.study == study)
                    & (CLAIMS.c.item == item)
                    & (CLAIMS.c.owner == row.owner)
                    & (CLAIMS.c.beat == row.beat)
                )
                .values(owner=self.owner, beat=0)
            ).rowcount
        self._seen.pop(key, None)
        if taken == 1:
            self.orphans.add(study)
        return taken == 1

    def confirm(self, study: str, item: int) -> bool:
        """Whether this process still holds ``item`` (checked in the database)."""
        with self.engine.begin() as con:
            return (
                con.execute(
                    CLAIMS.update()
                    .where(
                        (CLAIMS.c.study == study)
                        & (CLAIMS.c.item == item)
                        & (CLAIMS.c.owner == self.owner)
                    )
                    .values(beat=CLAIMS.c.beat + 1)
                ).rowcount
                == 1
            )

    def release(self, study: str, item: int) -> None:
        """Drop this process's claim on ``item`` (after its result is written, or on failure)."""
        with self.engine.begin() as con:
            con.execute(
                CLAIMS.delete().where(
                    (CLAIMS.c.study == study)
                    & (CLAIMS.c.item == item)
                    & (CLAIMS.c.owner == self.owner)
                )
            )


def clear_claims(engine: sa.Engine) -> int:
    """Delete every claim (a local store whose folder lock proves no one else runs)."""
    with engine.begin() as con:
        return con.execute(CLAIMS.delete()).rowcount
