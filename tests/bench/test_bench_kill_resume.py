"""Kill -9 in the middle of a comparison, then resume: nothing finished is lost or redone.

The comparison runs as a real ``descentlab compare`` process with two worker
processes. First the workers are killed with SIGKILL in the middle of trials;
then, on the resumed run, the main process *alone* is killed with SIGKILL: its
workers must die with it and release the folder lock; a third run finishes at
once (no waiting for a lock). The result must equal an uninterrupted run (all but
the wall-time score).
A last case kills a run and starts over with ``--fresh``: every result
finished before the kill must be in the backup it keeps.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from descentlab.bench.harness import compare
from tests.bench.processes import (
    alive,
    compare_command,
    count_state,
    environment,
    finished,
    kill_group,
    start,
    wait_for,
    workers,
)

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")

ARGS = {
    "optimizers": "sgd,adam",
    "problems": "himmelblau,ill_conditioned_quadratic",
    "trials": 4,
    "seeds": 2,
}
TOTAL = 2 * 2 * (4 + 2)


def _command(out: Path) -> list[str]:
    return compare_command(out, **ARGS, workers=2)


def _without_time_score(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time_score"} for row in rows]


def test_sigkill_workers_then_main_alone_then_resume(tmp_path) -> None:
    reference = compare(**ARGS, workers=1, progress=False, report=False, out=tmp_path / "ref")
    out = tmp_path / "killed"
    db = out / "results.db"

    # 1. kill the worker processes with SIGKILL while trials are running
    proc = start(_command(out))
    wait_for(
        lambda: len(finished(db)) >= 3
        and count_state(db, "RUNNING") >= 1
        and len(workers(proc.pid)) == 2,
        proc,
    )
    before_first = finished(db)
    for victim in workers(proc.pid):  # both workers: each is in the middle of an item
        os.kill(victim, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, (stdout, stderr)
    assert "worker process died" in stderr and "resumes" in stderr
    after_first = finished(db)
    # a killed trial was mid-run: it is left RUNNING and never reported
    assert count_state(db, "RUNNING") >= 1, (stdout, stderr, after_first)
    assert all(after_first[k] == v for k, v in before_first.items())
    assert len(after_first) < TOTAL

    # 2. resume, then SIGKILL the main process alone: its workers must die with it
    proc = start(_command(out))
    wait_for(lambda: len(finished(db)) >= len(after_first) + 2 and workers(proc.pid), proc)
    orphans = workers(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    end = time.monotonic() + 30
    while any(alive(pid) for pid in orphans) and time.monotonic() < end:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in orphans), "worker processes outlived their parent"
    with open(out / ".descentlab.lock", "rb") as fh:  # the folder lock is free
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fh, fcntl.LOCK_UN)
    after_second = finished(db)
    assert all(after_second[k] == v for k, v in after_first.items())  # nothing lost
    assert len(after_second) < TOTAL

    # 3. resume to the end
    done = subprocess.run(_command(out), capture_output=True, text=True, env=environment(),
                          timeout=300)
    assert done.returncode == 0, done.stderr
    final = finished(db)
    assert all(final[k] == v for k, v in after_second.items())  # nothing lost
    assert len(final) == TOTAL  # nothing redone: exactly the budget, one run per seed
    seeds = [v[3] for k, v in final.items() if k[0].startswith("runs:")]
    assert len(seeds) == 2 * 2 * 2
    assert count_state(db, "RUNNING") == 0
    assert f"{TOTAL - len(after_second)} trials+runs done now" in done.stdout
    # and nothing half-written was reported: the result equals the uninterrupted run
    # (all but the wall-time score, which depends on how busy the machine was)
    board = json.loads((out / "results.json").read_text())["leaderboard"]
    assert _without_time_score(board) == _without_time_score(reference.results.leaderboard)
    ref_trials = {(k[0], v[2], v[3]) for k, v in finished(tmp_path / "ref" / "results.db").items()}
    assert {(k[0], v[2], v[3]) for k, v in final.items()} == ref_trials


def test_fresh_after_kill_keeps_every_finished_result(tmp_path) -> None:
    out = tmp_path / "out"
    db = out / "results.db"
    proc = start(compare_command(out, **ARGS, workers=1))
    wait_for(lambda: len(finished(db)) >= 5, proc)
    kill_group(proc)
    saved = finished(db)
    wal = db.with_name("results.db-wal")
    # the point of the test: results live in the write-ahead log after a kill
    assert wal.exists() and wal.stat().st_size > 0
    fresh = subprocess.run(
        compare_command(out, "--fresh", optimizers="sgd", problems="square", trials=1, seeds=1),
        capture_output=True, text=True, env=environment(), timeout=300,
    )
    assert fresh.returncode == 0, fresh.stderr
    [backup] = out.glob("results.db.*.bak")
    assert not list(out.glob("results.db.*.bak-*"))  # one self-contained file
    kept = finished(backup)
    assert kept == saved and len(kept) >= 5
    assert len(finished(db)) == 2  # the new database holds only the new run
