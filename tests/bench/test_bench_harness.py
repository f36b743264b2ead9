"""Whole comparisons: exact reproducibility, resumption, exports and bad input."""

from __future__ import annotations

import csv
import json

import pytest

from descentlab.bench.errors import BenchError
from descentlab.bench.harness import compare
from descentlab.cli import main

TINY = {
    "optimizers": "sgd,adam",
    "problems": "square,noisy_quadratic",
    "trials": 3,
    "seeds": 2,
    "workers": 1,
    "progress": False,
}


def _reproducible_view(path) -> dict:
    data = json.loads((path / "results.json").read_text())
    runs = [
        {k: v for k, v in r.items() if k not in ("train_time", "time_to_target", "peak_bytes")}
        for r in data["runs"]
    ]
    trials = [(u["problem"], u["entrant"], u["tuning_trials"]) for u in data["units"]]
    return {"leaderboard": data["leaderboard"], "runs": runs, "trials": trials}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("first")
    return compare(**TINY, out=out, report=False)


def test_same_command_same_seeds_same_leaderboard(first_run, tmp_path) -> None:
    again = compare(**TINY, out=tmp_path, report=False)
    assert again.leaderboard_markdown == first_run.leaderboard_markdown
    assert _reproducible_view(tmp_path) == _reproducible_view(first_run.out)
    assert first_run.work_done == first_run.work_total == 2 * 2 * (3 + 2)


def test_rerun_resumes_and_redoes_nothing(first_run) -> None:
    before = _reproducible_view(first_run.out)
    again = compare(**TINY, out=first_run.out, report=False)
    assert again.work_done == 0 and again.work_total == 20
    assert _reproducible_view(first_run.out) == before


def test_more_seeds_extends_without_redoing(first_run, tmp_path) -> None:
    import shutil

    shutil.copy(first_run.out / "results.db", tmp_path / "results.db")
    more = compare(**{**TINY, "seeds": 3}, out=tmp_path, report=False)
    assert more.work_done == 2 * 2 * 1  # one new seed per unit; tuning reused
    old = {
        (r["problem"], r["entrant"], r["seed"]): r
        for r in _reproducible_view(first_run.out)["runs"]
    }
    new = {(r["problem"], r["entrant"], r["seed"]): r for r in _reproducible_view(tmp_path)["runs"]}
    assert all(new[k] == v for k, v in old.items())


def test_gd_equals_sgd_on_a_full_batch_problem(tmp_path) -> None:
    result = compare(
        "gd,sgd", "square", trials=3, seeds=1, workers=1, progress=False, out=tmp_path, report=False
    )
    rows = {r["optimizer"]: r for r in result.results.leaderboard}
    assert rows["gd"]["square"] == rows["sgd"]["square"]
    assert (
        result.results.units[("square", "gd")].hparams
        == result.results.units[("square", "sgd")].hparams
    )


def test_exports(first_run) -> None:
    with open(first_run.out / "runs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 2 * 2
    assert {"problem", "optimizer", "seed", "final_loss", "steps_to_target"} <= set(rows[0])
    with open(first_run.out / "leaderboard.csv") as fh:
        board = list(csv.DictReader(fh))
    assert [r["optimizer"] for r in board] == [
        r["optimizer"] for r in first_run.results.leaderboard
    ]
    with open(first_run.out / "trials.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2 * 2 * 3
    json.loads((first_run.out / "results.json").read_text())  # strict JSON


def test_bad_names_list_valid_ones(tmp_path) -> None:
    with pytest.raises(BenchError, match="unknown optimizer 'adamz'; valid names: gd, sgd"):
        compare("sgd,adamz", "square", out=tmp_path)
    with pytest.raises(BenchError, match="unknown problem 'sqare'; valid names: .*square"):
        compare("sgd", "sqare", out=tmp_path)
    with pytest.raises(BenchError, match="more than once: sgd"):
        compare("sgd,sgd", "square", out=tmp_path)
    assert not (tmp_path / "results.db").exists()


@pytest.mark.parametrize(("name", "value"), [("trials", 0), ("seeds", -1), ("workers", 0)])
def test_bad_budgets(tmp_path, name: str, value: int) -> None:
    with pytest.raises(BenchError, match=f"{name} must be a positive integer.*{value}"):
        compare("sgd", "square", out=tmp_path, **{name: value})


def test_cli_errors_are_clear(tmp_path, capsys) -> None:
    assert main(["compare", "--optimizers", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown optimizer 'nope'; valid names:" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--trials", "0", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "must be a positive integer (at least 1), got '0'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    assert (
        main(
            [
                "compare",
                "--optimizers",
                "sgd",
                "--problems",
                "square",
                "--out",
                str(blocker / "out"),
            ]
        )
        == 2
    )
    assert "not writable" in capsys.readouterr().err


def test_cli_corrupt_database_keeps_results(tmp_path, capsys) -> None:
    (tmp_path / "results.db").write_bytes(b"\x00garbage" * 64)
    code = main(
        [
            "compare",
            "--optimizers",
            "sgd",
            "--problems",
            "square",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 2
    assert "is corrupt" in capsys.readouterr().err
    assert (tmp_path / "results.db").read_bytes() == b"\x00garbage" * 64


def test_cli_prints_leaderboard_and_wall_time(first_run, capsys) -> None:
    code = main(
        [
            "compare",
            "--optimizers",
            "sgd,adam",
            "--problems",
            "square,noisy_quadratic",
            "--trials",
            "3",
            "--seeds",
            "2",
            "--workers",
            "1",
            "--no-progress",
            "--out",
            str(first_run.out),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert first_run.leaderboard_markdown in out
    assert "total wall time:" in out and "0 trials+runs done now" in out
    assert (first_run.out / "report.html").exists()
