"""Kill -9 in the middle of a comparison, then resume: nothing finished is lost or redone.

The comparison runs as a real ``descentlab compare`` process with two worker
processes. First the workers are killed with SIGKILL in the middle of trials;
then, on the resumed run, the whole process group (parent and workers) is
killed with SIGKILL; a third run finishes. The result must equal an
uninterrupted run of the same command exactly.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from descentlab.bench.harness import compare

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")

ARGS = {
    "optimizers": "sgd,adam",
    "problems": "himmelblau,ill_conditioned_quadratic",
    "trials": 4,
    "seeds": 2,
}
TOTAL = 2 * 2 * (4 + 2)


def _command(out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "descentlab",
        "compare",
        "--optimizers",
        ARGS["optimizers"],
        "--problems",
        ARGS["problems"],
        "--trials",
        str(ARGS["trials"]),
        "--seeds",
        str(ARGS["seeds"]),
        "--workers",
        "2",
        "--no-progress",
        "--out",
        str(out),
    ]


def _start(out: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start the comparison into ``out`` in its own session (so it can be killed whole)."""
    return subprocess.Popen(
        _command(out),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def _query(db: Path, sql: str) -> list[tuple]:
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


def _finished(db: Path) -> dict[tuple[str, int], tuple]:
    """Finished trials by (study, number): state, value and parameters or seed attribute."""
    rows = _query(
        db,
        """
        SELECT s.study_name, t.number, t.state, v.value,
               (SELECT group_concat(p.param_name || '=' || p.param_value, ';')
                  FROM trial_params p WHERE p.trial_id = t.trial_id),
               (SELECT a.value_json FROM trial_user_attributes a
                  WHERE a.trial_id = t.trial_id AND a.key = 'seed')
        FROM trials t JOIN studies s ON s.study_id = t.study_id
        LEFT JOIN trial_values v ON v.trial_id = t.trial_id
        WHERE t.state IN ('COMPLETE', 'PRUNED')""",
    )
    return {(r[0], r[1]): r[2:] for r in rows}


def _running(db: Path) -> int:
    rows = _query(db, "SELECT count(*) FROM trials WHERE state = 'RUNNING'")
    return rows[0][0] if rows else 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(c) for c in text]
    return out


def _workers(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            continue
        if "resource_tracker" not in cmd and "forkserver" not in cmd:
            found.append(child)
    return found


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"compare finished before it could be killed: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for the comparison to make progress")


def test_sigkill_worker_then_whole_run_then_resume(tmp_path) -> None:
    reference = compare(**ARGS, workers=1, progress=False, report=False, out=tmp_path / "ref")
    out = tmp_path / "killed"
    db = out / "results.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    # 1. kill the worker processes with SIGKILL while trials are running
    proc = _start(out, env)
    _wait_for(
        lambda: len(_finished(db)) >= 3 and _running(db) >= 1 and len(_workers(proc.pid)) == 2, proc
    )
    before_first = _finished(db)
    for victim in _workers(proc.pid):  # both workers: each is in the middle of its unit
        os.kill(victim, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, (stdout, stderr)
    assert "worker process died" in stderr and "resumes" in stderr
    after_first = _finished(db)
    # a killed trial was mid-run: it is left RUNNING and never reported
    assert _running(db) >= 1, (stdout, stderr, after_first)
    assert all(after_first[k] == v for k, v in before_first.items())
    assert len(after_first) < TOTAL

    # 2. resume, then kill the whole run (parent and workers) with SIGKILL
    proc = _start(out, env)
    _wait_for(lambda: len(_finished(db)) >= len(after_first) + 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    after_second = _finished(db)
    assert all(after_second[k] == v for k, v in after_first.items())  # nothing lost
    assert len(after_second) < TOTAL

    # 3. resume to the end
    done = subprocess.run(_command(out), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    final = _finished(db)
    assert all(final[k] == v for k, v in after_second.items())  # nothing lost
    assert len(final) == TOTAL  # nothing redone: exactly the budget, one run per seed
    seeds = [v[3] for k, v in final.items() if k[0].startswith("runs:")]
    assert len(seeds) == 2 * 2 * 2
    assert _running(db) == 0
    assert f"{TOTAL - len(after_second)} trials+runs done now" in done.stdout
    # and nothing half-written was reported: the result equals the uninterrupted run
    assert reference.leaderboard_markdown in done.stdout
    ref_trials = {(k[0], v[2], v[3]) for k, v in _finished(tmp_path / "ref" / "results.db").items()}
    assert {(k[0], v[2], v[3]) for k, v in final.items()} == ref_trials
