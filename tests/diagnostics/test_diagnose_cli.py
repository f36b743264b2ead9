"""``descentlab diagnose`` in-process, the user-problem API and the reports."""

from __future__ import annotations

import json
import re

import pytest
import torch

from descentlab.cli import main
from descentlab.diagnostics.findings import FindingKind
from descentlab.diagnostics.report import html_report, print_summary
from descentlab.diagnostics.run import make_optimizer


@pytest.fixture(autouse=True)
def _restore_denormals():
    yield
    torch.set_flush_denormal(False)


def test_builtin_problem_writes_json_and_html(tmp_path):
    out_json, out_html = tmp_path / "f.json", tmp_path / "r.html"
    argv = [
        "diagnose",
        "--depth",
        "30",
        "--init",
        "normal",
        "--steps",
        "20",
        "--interval",
        "5",
        "--no-progress",
        "--json",
        str(out_json),
        "--html",
        str(out_html),
    ]
    assert main(argv) == 0
    data = json.loads(out_json.read_text())
    assert "vanishing_gradients" in [f["kind"] for f in data["findings"]]
    page = out_html.read_text()
    assert "<script" not in page and not re.search(r"(src|href)=['\"]?http", page)
    assert "data-kind='vanishing_gradients'" in page and "<svg" in page
    assert main([*argv, "--fail-on", "warning"]) == 1
    assert main([*argv, "--fail-on", "error"]) == 0


def test_divergence_and_lr_find_through_the_command(tmp_path, capsys):
    out = tmp_path / "f.json"
    argv = [
        "diagnose",
        "--depth",
        "4",
        "--optimizer",
        "sgd",
        "--lr",
        "5",
        "--steps",
        "30",
        "--no-progress",
        "--json",
        str(out),
        "--lr-find",
        "--fail-on",
        "error",
    ]
    assert main(argv) == 1
    data = json.loads(out.read_text())
    assert "divergence" in [f["kind"] for f in data["findings"]]
    assert set(data["lr_range_test"]) == {"steepest", "valley", "minimum/10"}
    assert "range test suggests" in capsys.readouterr().out


def test_user_problem_file(tmp_path, capsys):
    script = tmp_path / "mine.py"
    script.write_text(
        "import torch\n"
        "from torch import nn\n"
        "from descentlab.diagnostics.run import DiagnoseProblem\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    x = torch.randn(64, 3); y = x.sum(1, keepdim=True)\n"
        "    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))\n"
        "    return DiagnoseProblem(model, nn.functional.mse_loss, [(x, y)], (x, y))\n"
    )
    argv = [
        "diagnose",
        "--problem",
        f"{script}:build",
        "--optimizer",
        "sgd",
        "--lr",
        "0",
        "--steps",
        "12",
        "--no-progress",
        "--fail-on",
        "error",
    ]
    assert main(argv) == 1  # lr = 0: the optimizer does not move the weights
    assert "stalled_optimizer" in capsys.readouterr().out


def test_bad_inputs_exit_with_status_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["diagnose", "--optimizer", "nonsense", "--no-progress"])
    assert exc.value.code == 2
    assert "argument --optimizer: unknown optimizer 'nonsense'" in capsys.readouterr().err
    script = tmp_path / "bad.py"
    script.write_text("def build():\n    return 3\n")
    assert main(["diagnose", "--problem", f"{script}:build", "--no-progress"]) == 2
    assert "must return a DiagnoseProblem, got int" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["diagnose", "--problem", "nocolon", "--no-progress"])
    assert "must be FILE.py:FUNCTION, got 'nocolon'" in capsys.readouterr().err


def test_make_optimizer_resolves_descentlab_and_torch_names():
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert type(make_optimizer("LBFGS", p)).__name__ == "LBFGS"
    assert make_optimizer("adam", p, lr=0.1).param_groups[0]["lr"] == 0.1
    with pytest.raises(ValueError, match="optimizer must be one of .*did you mean 'adamw'"):
        make_optimizer("adamw2", p)


def test_reports_without_findings():
    from descentlab.diagnostics.monitor import TrainingMonitor

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = TrainingMonitor(model, opt, interval=1)
    loss = model(torch.ones(4, 2)).pow(2).mean()
    loss.backward()
    opt.step()
    mon.record_loss(loss)
    assert "id='no-findings'" in html_report(mon)
    assert not mon.has(FindingKind.DIVERGENCE)
    print_summary(mon)
