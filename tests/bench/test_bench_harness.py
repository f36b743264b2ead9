"""Whole comparisons: exact reproducibility, resumption, exports and bad input."""

from __future__ import annotations

import csv
import json
import math

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
    """Everything but the wall times and what is computed from them."""
    data = json.loads((path / "results.json").read_text())
    runs = [
        {k: v for k, v in r.items() if k not in ("train_time", "time_to_target", "peak_bytes")}
        for r in data["runs"]
    ]
    board = [{k: v for k, v in row.items() if k != "time_score"} for row in data["leaderboard"]]
    trials = [(u["problem"], u["entrant"], u["tuning_trials"]) for u in data["units"]]
    return {"leaderboard": board, "runs": runs, "trials": trials}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("first")
    return compare(**TINY, out=out, report=False)


def test_same_command_same_seeds_same_leaderboard(first_run, tmp_path) -> None:
    again = compare(**TINY, out=tmp_path, report=False)
    assert _reproducible_view(tmp_path) == _reproducible_view(first_run.out)
    assert again.results.scores == first_run.results.scores
    assert first_run.work_done == first_run.work_total == 2 * 2 * (3 + 2)


def test_rerun_resumes_and_redoes_nothing(first_run) -> None:
    before = _reproducible_view(first_run.out)
    again = compare(**TINY, out=first_run.out, report=False)
    assert again.work_done == 0 and again.work_total == 20
    assert _reproducible_view(first_run.out) == before
    # resuming reads the stored wall times, so even the time score is unchanged
    assert again.leaderboard_markdown == first_run.leaderboard_markdown


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
    with pytest.raises(
        BenchError, match="unknown optimizer 'adamz'; did you mean 'adam'. valid names: gd, sgd"
    ):
        compare("sgd,adamz", "square", out=tmp_path)
    with pytest.raises(
        BenchError, match="unknown problem 'sqare'; did you mean 'square'. valid names: .*square"
    ):
        compare("sgd", "sqare", out=tmp_path)
    with pytest.raises(BenchError, match="more than once: sgd"):
        compare("sgd,sgd", "square", out=tmp_path)
    assert not (tmp_path / "results.db").exists()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("trials", 0, "trials must be an integer >= 1, got 0"),
        ("seeds", -1, "seeds must be an integer >= 1, got -1"),
        ("workers", 0, "workers must be an integer >= 1, got 0"),
        ("seed", -1, r"seed must be an integer in \[0, 9223372036854775804\], got -1"),
        # re-run seeds seed+1 … seed+seeds must fit in 64 bits too
        ("seed", 2**63 - 3, r"seed must be an integer in \[0, 9223372036854775804\]"),
        ("seed", 2**64, "seed must be an integer in"),
    ],
)
def test_bad_budgets_and_seeds_refused_before_any_study(
    tmp_path, name: str, value: int, message: str
) -> None:
    with pytest.raises(BenchError, match=message):
        compare("sgd", "square", out=tmp_path / "out", **{"seeds": 3, name: value})
    assert not (tmp_path / "out").exists()  # nothing was created


def test_cli_errors_are_clear(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--optimizers", "nope", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --optimizers: unknown optimizer 'nope'; valid names:" in err
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--trials", "0", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "argument --trials: must be an integer >= 1, got '0'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    with pytest.raises(SystemExit):
        main(["compare", "--optimizers", "sgd", "--out", str(blocker / "out")])
    assert "is a file" in capsys.readouterr().err
    assert blocker.read_text() == "keep"


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


@pytest.fixture
def tiny_deep_suite(monkeypatch):
    """The deep suite's real problems, cut to two steps each so a comparison takes seconds."""
    import dataclasses

    from descentlab.problems import DEEP_SUITE, get_problem, registry

    for name in DEEP_SUITE:
        short = dataclasses.replace(get_problem(name), steps=2, eval_every=2)
        monkeypatch.setitem(registry._REGISTRY, name, short)
    return DEEP_SUITE


def test_compare_runs_the_deep_suite(tiny_deep_suite, tmp_path) -> None:
    result = compare("adam", suite="deep", trials=1, seeds=1, workers=1, progress=False,
                     report=False, out=tmp_path)
    assert [p.name for p in result.results.problems] == tiny_deep_suite
    assert result.work_done == result.work_total == 2 * len(tiny_deep_suite)
    header = result.leaderboard_markdown.splitlines()[0]
    assert header == "| " + " | ".join(
        ["rank", "optimizer", "score", "time score", "solved", *tiny_deep_suite]) + " |"
    data = json.loads((tmp_path / "results.json").read_text())
    assert [p["steps"] for p in data["problems"]] == [2] * len(tiny_deep_suite)
    assert all(math.isfinite(r["final"]["val_loss"]) for r in data["runs"])


def test_cli_takes_a_suite(monkeypatch, tmp_path, capsys) -> None:
    from descentlab.problems import register_suite, registry

    monkeypatch.setattr(registry, "_SUITES", dict(registry._SUITES))
    register_suite("tiny", ["square"], "one bowl")
    code = main(["compare", "--suite", "tiny", "--optimizers", "sgd", "--trials", "2",
                 "--seeds", "1", "--workers", "1", "--no-progress", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "| rank | optimizer | score | time score | solved | square |" in out
    data = json.loads((tmp_path / "results.json").read_text())
    assert "--suite tiny" in data["meta"]["command"]
    assert (tmp_path / "report.html").exists()


def test_suite_errors(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--suite", "dep", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --suite: unknown suite 'dep'; did you mean 'deep'? valid names: deep, " \
        "default" in err and "Traceback" not in err
    with pytest.raises(BenchError, match="unknown suite 'dep'; did you mean 'deep'"):
        compare("sgd", suite="dep", out=tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--suite", "deep", "--problems", "square", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(BenchError, match="either problems or a suite"):
        compare("sgd", "square", suite="deep", out=tmp_path)
    assert not (tmp_path / "results.db").exists()
