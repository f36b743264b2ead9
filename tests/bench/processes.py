"""Helpers for tests that run ``descentlab compare`` as real processes and kill them.

They read the results database directly (read-only SQLite, or any SQLAlchemy
URL), so what is checked is what is stored, not what the process printed.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FINISHED_SQL = """
    SELECT s.study_name, t.number, t.state, v.value,
           (SELECT group_concat(p.param_name || '=' || p.param_value, ';')
              FROM trial_params p WHERE p.trial_id = t.trial_id),
           (SELECT a.value_json FROM trial_user_attributes a
              WHERE a.trial_id = t.trial_id AND a.key = 'seed')
    FROM trials t JOIN studies s ON s.study_id = t.study_id
    LEFT JOIN trial_values v ON v.trial_id = t.trial_id
    WHERE t.state IN ('COMPLETE', 'PRUNED')"""


def compare_command(out: Path, *options: str, **args: object) -> list[str]:
    """``python -m descentlab compare`` with ``--name value`` for each of ``args``."""
    command = [sys.executable, "-m", "descentlab", "compare", "--no-progress", "--out", str(out)]
    for name, value in args.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    return command + list(options)


def environment() -> dict[str, str]:
    """The environment of a child comparison: this checkout first on the path, unbuffered."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def start(command: list[str]) -> subprocess.Popen:
    """Start ``command`` in its own session (so it can be killed whole)."""
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
        start_new_session=True,
        cwd=ROOT,
    )


def query(db: Path, sql: str) -> list[tuple]:
    """Rows of ``sql`` on SQLite file ``db`` opened read-only; [] before its tables exist."""
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # tables not created yet
        return []


def finished(db: Path) -> dict[tuple[str, int], tuple]:
    """Finished trials by (study, number): state, value and parameters or seed attribute."""
    return {(r[0], r[1]): r[2:] for r in query(db, FINISHED_SQL)}


def count_state(db: Path, state: str) -> int:
    """How many trials are in ``state`` (``RUNNING``, ``FAIL``, …)."""
    rows = query(db, f"SELECT count(*) FROM trials WHERE state = '{state}'")
    return rows[0][0] if rows else 0


def children(pid: int) -> list[int]:
    """Process ids of the children of ``pid`` (Linux /proc)."""
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except FileNotFoundError:
        pass
    return out


def workers(pid: int) -> list[int]:
    """The worker processes of a comparison (children other than multiprocessing helpers)."""
    found = []
    for child in children(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            continue
        if "resource_tracker" not in cmd and "forkserver" not in cmd:
            found.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status and "\nState:\tX" not in status


def wait_for(predicate: Callable[[], bool], proc: subprocess.Popen, timeout: float = 180) -> None:
    """Poll ``predicate`` until true; fail if ``proc`` ends first or time runs out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"compare finished before it could be killed: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for the comparison to make progress")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and every process of its session; reap it."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
