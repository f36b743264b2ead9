"""Bad input to the advisor: one clear message each, before any training (API and CLI)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from descentlab.advisor import advise, advise_problem
from descentlab.cli import main

from . import user_task

HERE = Path(__file__).parent
TASK = str(HERE / "user_task.py")


def _pieces(**changes):
    pieces = user_task.build()
    pieces.update(changes)
    return pieces


def _advise(**changes):
    p = _pieces(**changes)
    return advise(p.pop("model_fn"), p.pop("loss_fn"), p.pop("train_data"), p.pop("val_data"),
                  **p)


@pytest.mark.parametrize("budget", [0, -0.1, 1.5, float("nan"), "0.2", True])
def test_budget_outside_zero_one(budget):
    with pytest.raises(ValueError, match="budget"):
        _advise(budget=budget)
    with pytest.raises(ValueError, match="budget"):
        advise_problem("rosenbrock", budget=budget)


def test_budget_too_small_for_any_advice():
    with pytest.raises(ValueError, match="at least 12"):
        _advise(budget=0.1)  # 10 of 100 steps


def test_shapes_that_do_not_fit():
    x, y = user_task.data(64)
    with pytest.raises(ValueError, match=r"train_data: inputs of shape \(64, 7\)"):
        _advise(train_data=(x[:, :7], y))
    with pytest.raises(ValueError, match="val_data: targets of shape"):
        _advise(val_data=(x, y[:, None].float().repeat(1, 3)))
    with pytest.raises(ValueError, match="same number of rows"):
        _advise(train_data=(x, y[:10]))


def test_wrong_pieces():
    with pytest.raises(TypeError, match="model_fn"):
        _advise(model_fn="not callable")
    with pytest.raises(TypeError, match="must return an nn.Module"):
        _advise(model_fn=lambda seed: torch.zeros(3))
    with pytest.raises(ValueError, match="scalar"):
        _advise(loss_fn=lambda out, y: nn.functional.cross_entropy(out, y, reduction="none"))
    with pytest.raises(TypeError, match="train_data"):
        _advise(train_data=42)
    with pytest.raises(ValueError, match="metric"):
        _advise(metric="val_accurcy")


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "descentlab", "advise", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.parametrize("args, words", [
    (["--problem", "digitz"], "unknown problem 'digitz'"),
    (["--problem", "rosenbrock", "--budget", "0"], "argument --budget"),
    (["--problem", "rosenbrock", "--budget", "1.01"], "argument --budget"),
    (["--problem", "breast_cancer_logreg", "--budget", "0.05"], "at least 12"),
    (["--task", "no_such_module_x:build"], "cannot import 'no_such_module_x'"),
    (["--task", "nocolon"], "module:function"),
    (["--task", TASK + ":nothing"], "has no function 'nothing'"),
    (["--task", TASK + ":build_wrong_shape"], "inputs of shape (256, 7) do not fit the model"),
    (["--task", TASK + ":build_missing"], "without loss_fn"),
    (["--task", TASK + ":build_list"], "must return a dict"),
])
def test_cli_bad_input_one_line_exit_2(args, words, tmp_path, capsys):
    try:
        status = main(["advise", *args, "--out", str(tmp_path / "out")])
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], err
    assert not (tmp_path / "out").exists()  # nothing written: no work started


def test_cli_user_task_writes_offline_report(tmp_path):
    out = tmp_path / "advice"
    proc = _cli("--task", TASK + ":build", "--budget", "0.3", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "confidence" in proc.stdout and "optimizer = " in proc.stdout
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert (out / "advice.json").is_file()
