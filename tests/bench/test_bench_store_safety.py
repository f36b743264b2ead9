"""What the store refuses, so that nothing of anyone's is lost or mixed.

- a folder descentlab did not create (refused unless ``--force``);
- an Optuna database named ``results.db`` that descentlab did not write (refused,
  left byte-for-byte untouched, its running trials still running);
- results of another descentlab or torch version, or of an earlier store format
  (refused with the way to keep or discard them; ``--fresh`` discards, keeping a backup);
- report outputs are one set: a run killed at any point while writing them
  leaves the old set or the new set.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import optuna
import pytest
import torch

from descentlab.bench.errors import BenchError
from descentlab.bench.harness import compare
from descentlab.bench.protocol import Protocol
from descentlab.cli import main

TINY = {"optimizers": "sgd", "problems": "square", "trials": 2, "seeds": 1, "workers": 1,
        "progress": False}


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def test_folder_descentlab_did_not_create_needs_force(tmp_path, capsys) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "report.html").write_text("my own report")
    (theirs / "holiday.png").write_bytes(b"\x89PNG photo")
    before = _digest(theirs)
    code = main(["compare", "--optimizers", "sgd", "--problems", "square", "--trials", "2",
                 "--seeds", "1", "--workers", "1", "--no-progress", "--out", str(theirs)])
    assert code == 2
    err = capsys.readouterr().err
    assert "holds files descentlab did not write (holiday.png, report.html)" in err
    assert "--force" in err and "--out" in err
    assert _digest(theirs) == before and sorted(os.listdir(theirs)) == sorted(before)

    result = compare(**TINY, out=theirs, force=True, report=True)
    assert (theirs / "holiday.png").read_bytes() == b"\x89PNG photo"  # not ours: kept
    assert "descentlab compare" in (theirs / "report.html").read_text()  # --force: replaced
    assert result.work_done == 3
    # once written, the folder is descentlab's: no --force needed again
    assert compare(**TINY, out=theirs, report=False).work_done == 0


def test_foreign_optuna_database_is_refused_and_untouched(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".descentlab.lock").touch()  # even in a folder descentlab made
    url = f"sqlite:///{out / 'results.db'}"
    study = optuna.create_study(study_name="my-experiment", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2, n_trials=3)
    running = study.ask()
    running.suggest_float("x", 0, 1)
    del study
    before = _digest(out)
    for force in ([], ["--force"]):
        code = main(["compare", "--optimizers", "sgd", "--problems", "square", "--no-progress",
                     "--out", str(out), *force])
        assert code == 2
        err = capsys.readouterr().err
        assert "is an Optuna database that descentlab did not write (studies: 'my-experiment')"
        assert "left untouched" in err and "--out" in err
    with pytest.raises(BenchError, match="did not write"):
        compare(**TINY, out=out, fresh=True)  # not even moved aside: it is not ours
    assert _digest(out) == before
    states = [t.state for t in optuna.load_study(study_name="my-experiment", storage=url).trials]
    assert states.count(optuna.trial.TrialState.RUNNING) == 1  # not taken over
    tables = {r[0] for r in sqlite3.connect(out / "results.db").execute(
        "SELECT name FROM sqlite_master WHERE type='table'")}
    assert not any(t.startswith("descentlab") for t in tables)


def test_results_of_other_versions_are_refused_with_keep_or_discard(tmp_path) -> None:
    out = tmp_path / "out"
    first = compare(**TINY, out=out, report=False)
    con = sqlite3.connect(out / "results.db")
    with con:
        con.execute(
            "UPDATE descentlab_store SET value = ? WHERE key = 'versions'",
            (json.dumps({"descentlab": "0.0.9", "torch": "2.5.0"}),),
        )
    con.close()
    with pytest.raises(BenchError) as exc:
        compare(**TINY, out=out, report=False)
    message = str(exc.value)
    assert "holds results of descentlab 0.0.9 with torch 2.5.0" in message
    assert "to keep them, run with --out set to another folder" in message
    assert "to discard them" in message and "--fresh" in message
    again = compare(**TINY, out=out, report=False, fresh=True)
    assert again.work_done == 3 and again.leaderboard_markdown == first.leaderboard_markdown
    [backup] = out.glob("results.db.*.bak")
    names = [r[0] for r in sqlite3.connect(backup).execute("SELECT study_name FROM studies")]
    assert len(names) == 2  # the old results are kept in the backup


def test_store_of_an_earlier_format_is_refused(tmp_path) -> None:
    out = tmp_path / "out"
    compare(**TINY, out=out, report=False)
    con = sqlite3.connect(out / "results.db")
    with con:
        con.execute("DROP TABLE descentlab_store")
        con.execute("DROP TABLE descentlab_claims")
    con.close()
    with pytest.raises(BenchError, match="holds results of an earlier descentlab version; to keep"):
        compare(**TINY, out=out, report=False)


def test_results_are_keyed_by_descentlab_and_torch_versions(monkeypatch) -> None:
    import descentlab
    from descentlab.bench.entrants import get_entrant
    from descentlab.problems import get_problem

    problem, entrant, protocol = get_problem("square"), get_entrant("sgd"), Protocol()
    key = protocol.tuning_key(problem, entrant)
    assert f"dl={descentlab.__version__}:torch={torch.__version__}" in key
    monkeypatch.setattr(descentlab, "__version__", "99.0")
    assert protocol.tuning_key(problem, entrant) != key
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "3.0.0")
    assert protocol.tuning_key(problem, entrant) != key
    assert protocol.runs_key(problem, entrant) != key.replace("tune:", "runs:", 1)


def _published_set(out: Path) -> tuple[set[str], str]:
    """The generation every published name resolves into (one, or the test fails), and the
    command recorded in it, read from results.json and report.html alike."""
    names = ["report.html", "results.json", "runs.csv", "trials.csv", "leaderboard.csv",
             "figures"]
    generations = {Path(os.path.realpath(out / n)).parent for n in names}
    data = json.loads((out / "results.json").read_text())
    command = data["meta"]["command"]
    assert command in (out / "report.html").read_text()
    rows = (out / "runs.csv").read_text().strip().splitlines()
    assert len(rows) - 1 == len(data["runs"])
    for figure in (out / "figures").iterdir():
        assert figure.read_bytes().startswith(b"\x89PNG")
    return {str(g) for g in generations}, command


def test_a_kill_while_writing_the_report_leaves_the_old_or_the_new_set(
    tmp_path, monkeypatch
) -> None:
    from descentlab.bench import figures, results

    out = tmp_path / "out"
    compare(**TINY, out=out, command="run-A")
    assert _published_set(out)[1] == "run-A"
    calls = {"n": 0, "die_at": 0}

    def watched(write):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == calls["die_at"]:
                os._exit(9)  # as under kill -9: no clean-up of any kind
            return write(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(figures, "png_bytes", watched(figures.png_bytes))
    monkeypatch.setattr(results, "_write_csv", watched(results._write_csv))
    monkeypatch.setattr(results, "_atomic_write", watched(results._atomic_write))
    compare(**TINY, out=tmp_path / "count", command="count")
    writes = calls["n"]  # the figures, the CSV files and results.json of one report
    assert writes >= 7
    statuses = set()
    for k in range(1, writes + 2):  # die at each write in turn, and last not at all
        calls.update(n=0, die_at=k)
        pid = os.fork()
        if pid == 0:
            try:
                # OpenMP's thread pool does not survive fork: one thread in the child
                torch.set_num_threads(1)
                compare(**TINY, out=out, command=f"run-B{k}")
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        statuses.add(os.waitstatus_to_exitcode(status))
        generations, command = _published_set(out)
        assert len(generations) == 1, (k, generations)  # one set, never a mix
        assert command == ("run-A" if k <= writes else f"run-B{k}"), (k, command)
    assert statuses == {9, 0}
    assert sorted(p.name for p in (out / ".outputs").iterdir())[-1] == "current"
    assert len(list((out / ".outputs").iterdir())) == 2  # the current set and its link
