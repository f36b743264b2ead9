"""The results store: bad output folders, corrupt databases, the folder lock, stale trials."""

from __future__ import annotations

import sqlite3

import optuna
import pytest
from optuna.trial import TrialState

from descentlab.bench.errors import BenchError
from descentlab.bench.runner import RunRecord
from descentlab.bench.store import DB_NAME, ResultStore


def _record(seed: int) -> RunRecord:
    return RunRecord(
        seed=seed,
        hparams={"lr": 0.1},
        final={"loss": float("nan")},
        curve=[{"step": 0.0, "loss": 1.0}],
        steps_to_target=None,
        time_to_target=None,
        train_time=0.5,
        diverged=True,
        state_bytes=8,
    )


def test_runs_round_trip_and_first_seed_wins(tmp_path) -> None:
    store = ResultStore.open(tmp_path)
    store.add_run("runs:x", "minimize", _record(1), float("inf"))
    store.add_run("runs:x", "minimize", _record(2), 1.0)
    runs = store.runs("runs:x")
    assert sorted(runs) == [1, 2]
    assert runs[1].final["loss"] is None  # NaN stored as null: strict JSON
    assert runs[1].curve == [{"step": 0.0, "loss": 1.0}]
    assert store.runs("runs:missing") == {}
    store.close()


def test_output_folder_that_cannot_be_created(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BenchError, match="not writable|not a folder"):
        ResultStore.open(blocker / "sub")
    with pytest.raises(BenchError, match="exists and is not a folder"):
        ResultStore.open(blocker)
    assert blocker.read_text() == "x"


@pytest.mark.parametrize(
    "content", [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\x07" * 5000]
)
def test_corrupt_database_is_refused_and_untouched(tmp_path, content: bytes) -> None:
    db = tmp_path / DB_NAME
    db.write_bytes(content)
    with pytest.raises(BenchError, match="corrupt.*untouched"):
        ResultStore.open(tmp_path)
    assert db.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == [".descentlab.lock", DB_NAME]


def test_truncated_real_database_is_refused(tmp_path) -> None:
    store = ResultStore.open(tmp_path)
    for seed in range(30):
        store.add_run("runs:x", "minimize", _record(seed), 1.0)
    store.close()
    con = sqlite3.connect(tmp_path / DB_NAME)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    db = tmp_path / DB_NAME
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    with pytest.raises(BenchError, match="corrupt"):
        ResultStore.open(tmp_path)
    assert db.read_bytes() == data[: len(data) // 2]


def test_foreign_sqlite_database_is_refused(tmp_path) -> None:
    con = sqlite3.connect(tmp_path / DB_NAME)
    con.execute("CREATE TABLE mine (x)")
    con.commit()
    con.close()
    with pytest.raises(BenchError, match="not a descentlab results database"):
        ResultStore.open(tmp_path)
    con = sqlite3.connect(tmp_path / DB_NAME)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["mine"]


def test_fresh_keeps_the_old_database(tmp_path) -> None:
    db = tmp_path / DB_NAME
    db.write_bytes(b"garbage" * 100)
    store = ResultStore.open(tmp_path, fresh=True)
    store.close()
    backups = list(tmp_path.glob(f"{DB_NAME}.*.bak"))
    assert len(backups) == 1 and backups[0].read_bytes() == b"garbage" * 100


def test_folder_lock(tmp_path) -> None:
    first = ResultStore.open(tmp_path)
    with pytest.raises(BenchError, match="another descentlab compare is running"):
        ResultStore.open(tmp_path)
    first.close()
    ResultStore.open(tmp_path).close()


def test_stale_running_trials_fail_and_are_never_reported(tmp_path) -> None:
    store = ResultStore.open(tmp_path)
    study = store.study("tune:x", "minimize")
    done = study.ask()
    done.suggest_float("lr", 1e-3, 1.0, log=True)
    study.tell(done, 0.5)
    left = study.ask()  # a process killed here leaves this trial RUNNING
    left.suggest_float("lr", 1e-3, 1.0, log=True)
    left.report(0.1, 1)
    assert [t.number for t in store.finished_trials("tune:x")] == [0]
    store.close()
    reopened = ResultStore.open(tmp_path)
    states = [
        t.state for t in optuna.load_study(study_name="tune:x", storage=reopened.storage).trials
    ]
    assert states == [TrialState.COMPLETE, TrialState.FAIL]
    assert [t.number for t in reopened.finished_trials("tune:x")] == [0]
    reopened.close()


def test_pickled_store_reconnects(tmp_path) -> None:
    import pickle

    store = ResultStore.open(tmp_path)
    store.add_run("runs:x", "minimize", _record(1), 1.0)
    copy = pickle.loads(pickle.dumps(store))
    assert sorted(copy.runs("runs:x")) == [1]
    copy.close()
    store.close()


def test_storage_url_instead_of_local_file(tmp_path) -> None:
    from descentlab.bench.harness import compare

    url = f"sqlite:///{tmp_path / 'server.db'}"
    result = compare(
        "sgd",
        "square",
        trials=2,
        seeds=1,
        workers=1,
        progress=False,
        out=tmp_path / "out",
        storage=url,
        report=False,
    )
    assert result.work_done == 3
    assert not (tmp_path / "out" / DB_NAME).exists()
    study_names = [s.study_name for s in optuna.get_all_study_summaries(url)]
    assert len(study_names) == 2  # one tuning study, one re-runs study
    with pytest.raises(BenchError, match="--fresh only applies to the local database"):
        ResultStore.open(tmp_path / "out", url, fresh=True)


def test_bad_storage_url_is_a_clear_error_without_the_password(tmp_path) -> None:
    with pytest.raises(
        BenchError, match=r"cannot open results storage 'postgresql://bob:\*\*\*@"
    ) as exc:
        ResultStore.open(tmp_path, "postgresql://bob:secret@127.0.0.1:1/db")
    assert "secret" not in str(exc.value)
    ResultStore.open(tmp_path).close()  # the lock was released
