"""Several independent ``descentlab compare`` processes on one ``--storage``, as on several
machines: they share the work through claims in the database, no item is run twice, every one
of them prints exactly the leaderboard of one process, and killing one loses nothing finished.

Each test runs on a SQLite file shared by URL and on a real PostgreSQL server on loopback
(``tests/postgres.py``; skipped with the reason only where no server can be had).
"""

from __future__ import annotations

import re
from collections import Counter

import optuna
import pytest
import sqlalchemy as sa

from descentlab.bench.claims import CLAIMS
from descentlab.bench.harness import compare
from descentlab.bench.store import engine_url
from tests.bench.processes import compare_command, kill_group, start, wait_for

ARGS = {
    "optimizers": "sgd,adam",
    "problems": "himmelblau,ill_conditioned_quadratic",
    "trials": 4,
    "seeds": 2,
}
UNITS, TOTAL = 2 * 2, 2 * 2 * (4 + 2)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return request.getfixturevalue("postgres_database")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The one-process comparison every shared run must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    return compare(**ARGS, workers=1, progress=False, report=False, out=out)


def _stored(url: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = optuna.storages.RDBStorage(engine_url(url))
    try:
        return {
            s.study_name: storage.get_all_trials(s._study_id)
            for s in storage.get_all_studies()
        }
    finally:
        storage.engine.dispose()


def _finished(url: str) -> dict[tuple[str, int], tuple]:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return {
        (name, t.number): (t.state, t.value, tuple(sorted(t.params.items())),
                           t.user_attrs.get("seed"))
        for name, trials in _stored(url).items()
        for t in trials
        if t.state in done
    }


def _claims(url: str) -> int:
    engine = sa.create_engine(engine_url(url))
    try:
        with engine.connect() as con:
            return con.execute(sa.select(sa.func.count()).select_from(CLAIMS)).scalar() or 0
    except sa.exc.SQLAlchemyError:  # not created yet
        return 0
    finally:
        engine.dispose()


def _check_each_item_finished_once(url: str) -> None:
    """Tuning slots 0…trials−1 and the re-run seeds, each finished exactly once."""
    stored = _stored(url)
    tuning = [n for n in stored if n.startswith("tune:")]
    runs = [n for n in stored if n.startswith("runs:")]
    assert len(tuning) == len(runs) == UNITS
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for name in tuning:
        slots = [t.user_attrs["slot"] for t in stored[name] if t.state in done]
        assert sorted(slots) == list(range(ARGS["trials"])), (name, slots)
    for name in runs:
        seeds = Counter(t.user_attrs["seed"] for t in stored[name] if t.state in done)
        assert sorted(seeds) == [1, 2] and set(seeds.values()) == {1}, (name, seeds)
    assert _claims(url) == 0  # every claim released


def _leaderboard_by_steps(text: str) -> str:
    """The leaderboard in ``text`` without its wall-time column (the run-dependent one)."""
    rows = [line.split("|") for line in text.splitlines() if line.startswith("|")]
    drop = rows[0].index(" time score ")
    return "\n".join("|".join(cells[:drop] + cells[drop + 1:]) for cells in rows)


def _work_done(stdout: str) -> int:
    return int(re.search(r"work: (\d+) trials\+runs done now", stdout).group(1))


def test_processes_started_together_share_the_work(storage, reference, tmp_path) -> None:
    expected = _leaderboard_by_steps(reference.leaderboard_markdown)
    procs = [
        start(compare_command(tmp_path / f"machine{i}", storage=storage, workers=1, **ARGS))
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
        # the one-process leaderboard on steps (wall times differ between runs)
        assert _leaderboard_by_steps(stdout) == expected
    tables = [[ln for ln in stdout.splitlines() if ln.startswith("|")] for stdout, _ in outputs]
    assert tables[0] == tables[1]  # both read the same stored runs, wall times included
    done = [_work_done(stdout) for stdout, _ in outputs]
    assert sum(done) == TOTAL, done  # every item once: none twice, none missing
    _check_each_item_finished_once(storage)
    failed = [t for ts in _stored(storage).values() for t in ts
              if t.state != optuna.trial.TrialState.COMPLETE
              and t.state != optuna.trial.TrialState.PRUNED]
    assert failed == []  # no item was started twice either


def test_killing_one_process_loses_nothing_finished(
    postgres_database, reference, tmp_path
) -> None:
    """On PostgreSQL (the claim protocol is the same SQL on SQLite, tested above)."""
    storage = postgres_database
    expected = _leaderboard_by_steps(reference.leaderboard_markdown)
    options = {"storage": storage, "workers": 1, "stale_after": 3, **ARGS}
    victim = start(compare_command(tmp_path / "victim", **options))
    # wait until it has finished some work and holds a claim on more
    wait_for(lambda: len(_finished(storage)) >= 3 and _claims(storage) >= 1, victim)
    others = [start(compare_command(tmp_path / f"machine{i}", **options)) for i in range(2)]
    kill_group(victim)  # the others are still starting: the victim's claim is left behind
    saved = _finished(storage)
    assert _claims(storage) >= 1 and 3 <= len(saved) < TOTAL
    outputs = [p.communicate(timeout=600) for p in others]
    for proc, (stdout, stderr) in zip(others, outputs, strict=True):
        assert proc.returncode == 0, stderr
        assert _leaderboard_by_steps(stdout) == expected
    final = _finished(storage)
    assert all(final[k] == v for k, v in saved.items())  # nothing finished was lost
    # the others did exactly what the victim had not saved, its claimed item included
    assert sum(_work_done(stdout) for stdout, _ in outputs) == TOTAL - len(saved)
    _check_each_item_finished_once(storage)
    running = [t for ts in _stored(storage).values() for t in ts
               if t.state == optuna.trial.TrialState.RUNNING]
    assert running == []  # the victim's unfinished trial was marked failed by a taker-over


def test_postgresql_round_trip_in_process(postgres_database, reference, tmp_path) -> None:
    result = compare(**ARGS, workers=2, progress=False, report=False, out=tmp_path / "pg",
                     storage=postgres_database)
    by_steps = _leaderboard_by_steps(reference.leaderboard_markdown)
    assert _leaderboard_by_steps(result.leaderboard_markdown) == by_steps
    assert result.work_done == TOTAL
    again = compare(**ARGS, workers=1, progress=False, report=False, out=tmp_path / "again",
                    storage=postgres_database)
    assert again.work_done == 0
    assert again.leaderboard_markdown == result.leaderboard_markdown  # read back, times included
    assert not (tmp_path / "pg" / "results.db").exists()
    _check_each_item_finished_once(postgres_database)
