"""Every command refuses bad input the same way: exit status 2, one line, no traceback.

Each command line runs in a process of its own (``tests/commands/cli_driver.py``
forks one per case from a process that imported torch once), exactly as
``python -m descentlab ...`` runs it. The line must name the argument and the
value; misspelt names get a suggestion; nothing is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ["optuna", "sqlalchemy", "sklearn", "matplotlib", "rich", "tqdm"]


def _drive(cases: list[dict], hide: list[str] = ()) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.commands.cli_driver", "--hide", ",".join(hide)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("bad-args")
    (base / "file").write_text("keep")
    (base / "folder").mkdir()
    (base / "theirs").mkdir()
    (base / "theirs" / "report.html").write_text("their own report")
    (base / "returns_int.py").write_text("def build():\n    return 3\n")
    (base / "raises.py").write_text("def build():\n    raise RuntimeError('no data here')\n")
    return {k: str(base / k) for k in ("file", "folder", "theirs", "returns_int.py", "raises.py")}


# (command line, what the one line must contain); {name} is replaced from ``paths``
CASES: list[tuple[list[str], list[str]]] = [
    (["compar"], ["argument COMMAND: invalid choice: 'compar'; did you mean 'compare'?"]),
    # compare
    (["compare", "--trials", "0"], ["argument --trials: must be an integer >= 1, got '0'"]),
    (["compare", "--seeds", "x"], ["argument --seeds: must be an integer >= 1, got 'x'"]),
    (["compare", "--workers", "0"], ["argument --workers: must be an integer >= 1, got '0'"]),
    (
        ["compare", "--seed", str(2**63)],
        ["argument --seed: must be an integer in [0, 9223372036854775807]", f"'{2**63}'"],
    ),
    (
        ["compare", "--seed", str(2**63 - 2), "--seeds", "3", "--out", "{folder}/seed"],
        ["seed must be an integer in [0, 9223372036854775804], got 9223372036854775806"],
    ),
    (
        ["compare", "--optimizers", "adma"],
        ["argument --optimizers: unknown optimizer 'adma'; did you mean 'adam'?", "valid names"],
    ),
    (["compare", "--optimizers", "sgd,sgd"], ["optimizer named more than once: sgd"]),
    (["compare", "--optimizers", ","], ["argument --optimizers: must name at least one"]),
    (
        ["compare", "--problems", "rosenbrok"],
        ["argument --problems: unknown problem 'rosenbrok'; did you mean 'rosenbrock'?"],
    ),
    (["compare", "--out", "{file}/sub"], ["argument --out:", "{file}' is a file"]),
    (["compare", "--out", "{file}"], ["argument --out:", "exists and is not a folder"]),
    (
        ["compare", "--storage", "postgres://bob:secret@localhost/db"],
        ["argument --storage: unknown database 'postgres'", "did you mean 'postgresql'?"],
    ),
    (["compare", "--storage", "results.db"], ["argument --storage: must be a database URL"]),
    (["compare", "--storage", "sqlite://x.db"], ["argument --storage: a SQLite URL needs"]),
    (
        [
            "compare",
            "--optimizers",
            "sgd",
            "--problems",
            "square",
            "--storage",
            "postgresql://bob:secret@127.0.0.1:1/db",
            "--out",
            "{folder}/pg",
        ],
        ["cannot open results storage 'postgresql://bob:***@127.0.0.1:1/db'"],
    ),
    (["compare", "--stale-after", "0"], ["argument --stale-after: must be a finite number > 0"]),
    (["compare", "--trails", "3"], ["unrecognized arguments: --trails 3", "'--trials'"]),
    (["compare", "--fresh", "--resume"], ["argument --resume: not allowed with argument --fresh"]),
    (
        ["compare", "--optimizers", "sgd", "--problems", "square", "--out", "{theirs}"],
        ["holds files descentlab did not write (report.html)", "--force"],
    ),
    # list
    (["list", "problms"], ["invalid choice: 'problms'; did you mean 'problems'?"]),
    (["list", "--jsn"], ["unrecognized arguments: --jsn", "'--json'"]),
    # visualize
    (["visualize", "--steps", "0"], ["argument --steps: must be an integer >= 1, got '0'"]),
    (
        ["visualize", "--function", "rosenbrok"],
        ["argument --function: unknown function 'rosenbrok'; did you mean 'rosenbrock'?"],
    ),
    (
        ["visualize", "--optimizers", "adam,momentm"],
        ["argument --optimizers: unknown optimizer 'momentm'; did you mean 'momentum'?"],
    ),
    (
        ["visualize", "--optimizers", "sgd:lr=-1"],
        ["argument --optimizers: lr must be a finite number >= 0, got -1"],
    ),
    (["visualize", "--optimizers", "sgd:bogus=3"], ["argument --optimizers:", "'bogus'"]),
    (["visualize", "--lr", "nan"], ["argument --lr: must be a finite number > 0, got 'nan'"]),
    (["visualize", "--start", "1,inf"], ["argument --start: must be two finite numbers"]),
    (
        ["visualize", "--formats", "png,jpg"],
        ["argument --formats: unknown format 'jpg'", "valid names: png, gif, html"],
    ),
    (["visualize", "--frames", "1"], ["argument --frames: must be an integer >= 2, got '1'"]),
    (["visualize", "--out", "{file}/sub"], ["argument --out:", "is a file"]),
    # diagnose
    (["diagnose", "--steps", "0"], ["argument --steps: must be an integer >= 1, got '0'"]),
    (["diagnose", "--batch-size", "0"], ["argument --batch-size: must be an integer >= 1"]),
    (["diagnose", "--depth", "-3"], ["argument --depth: must be an integer >= 1, got '-3'"]),
    (["diagnose", "--interval", "0"], ["argument --interval: must be an integer >= 1"]),
    (["diagnose", "--seed", "-1"], ["argument --seed: must be an integer in [0, "]),
    (["diagnose", "--lr", "-1"], ["argument --lr: must be a finite number >= 0, got '-1'"]),
    (
        ["diagnose", "--optimizer", "adma"],
        ["argument --optimizer: unknown optimizer 'adma'; did you mean 'adam'?"],
    ),
    (
        ["diagnose", "--init", "kaiming_norml"],
        ["argument --init: invalid choice: 'kaiming_norml'; did you mean 'kaiming_normal'?"],
    ),
    (["diagnose", "--hparam", "momentum"], ["argument --hparam: must look like KEY=VALUE"]),
    (
        ["diagnose", "--optimizer", "adam", "--hparam", "momentum=0.9"],
        ["argument --hparam:", "unexpected keyword argument 'momentum'"],
    ),
    (["diagnose", "--json", "{file}/x.json"], ["argument --json:", "is a file"]),
    (["diagnose", "--html", "{folder}"], ["argument --html:", "is a folder; give a file name"]),
    (["diagnose", "--problem", "nosuch.py:build"], ["argument --problem: no such file"]),
    (["diagnose", "--problem", "build"], ["argument --problem: must be FILE.py:FUNCTION"]),
    (
        ["diagnose", "--problem", "{returns_int.py}:build"],
        ["argument --problem:", "must return a DiagnoseProblem, got int"],
    ),
    (
        ["diagnose", "--problem", "{raises.py}:build"],
        ["argument --problem:", "failed: RuntimeError: no data here"],
    ),
    (["diagnose", "--fail-on", "warn"], ["invalid choice: 'warn'; did you mean 'warning'?"]),
    # schedules
    (["schedules", "--steps", "5"], ["argument --steps: must be an integer >= 20, got '5'"]),
    (["schedules", "--columns", "0"], ["argument --columns: must be an integer >= 1, got '0'"]),
    (["schedules", "--output", "{folder}"], ["argument --output/-o:", "is a folder"]),
    (["schedules", "--output", "{file}/x.png"], ["argument --output/-o:", "is a file"]),
    # speed
    (
        ["speed", "--optimizers", "adamm"],
        ["argument --optimizers: unknown optimizer 'adamm'; did you mean 'adam'?"],
    ),
    (["speed", "--cases", "c"], ["argument --cases: unknown case 'c'", "valid names: a, b, small"]),
    (["speed", "--repeats", "0"], ["argument --repeats: must be an integer >= 1, got '0'"]),
    (["speed", "--threads", "0"], ["argument --threads: must be an integer >= 1, got '0'"]),
    (["speed", "--json", "{file}/x.json"], ["argument --json:", "is a file"]),
    # demo
    (["demo", "--epochs", "0"], ["argument --epochs: must be an integer >= 1, got '0'"]),
    (["demo", "--batch-size", "0"], ["argument --batch-size: must be an integer >= 1"]),
    (["demo", "--seed", "-1"], ["argument --seed: must be an integer in [0, "]),
    # advise
    (["advise", "--problem", "digits_ml"],
     ["argument --problem: unknown problem 'digits_ml'; did you mean 'digits_mlp'?"]),
    (["advise", "--problem", "rosenbrock", "--budget", "0"],
     ["argument --budget: must be a number in (0, 1], got '0'"]),
    (["advise", "--problem", "rosenbrock", "--budget", "2"], ["argument --budget:", "'2'"]),
    (["advise", "--task", "{returns_int.py}:build"], ["argument --task:", "must return a dict"]),
    (["advise", "--task", "{raises.py}:build"], ["argument --task:", "no data here"]),
    (["advise", "--problem", "square", "--out", "{file}/sub"], ["argument --out:", "is a file"]),
    (["advise", "--problem", "rosenbrock", "--out", "{theirs}"],
     ["argument --out:", "report.html that descentlab advise did not write"]),
    # distributed
    (["distributed", "--steps", "0"], ["argument --steps: must be an integer >= 1, got '0'"]),
    (["distributed", "--world-size", "0"], ["argument --world-size: must be an integer >= 1"]),
    (
        ["distributed", "--tasks", "digits_cn"],
        ["argument --tasks: unknown task 'digits_cn'; did you mean 'digits_cnn'?"],
    ),
    (["distributed", "--out", "{file}/sub"], ["argument --out:", "is a file"]),
    (["distributed", "--figure", "{folder}"], ["argument --figure:", "is a folder"]),
]

def _commands() -> set[str]:
    """Every sub-command the command line offers (a new one must add its cases above)."""
    from descentlab.cli import build_parser

    parser = build_parser()
    return set(parser._subparsers._group_actions[0].choices)


def _fill(text: str, paths: dict[str, str]) -> str:
    for key, value in paths.items():
        text = text.replace("{" + key + "}", value)
    return text


def _one_error_line(result: dict, argv: list[str]) -> str:
    assert result["returncode"] == 2, (argv, result)
    assert "Traceback" not in result["stderr"], (argv, result["stderr"])
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1, (argv, result["stderr"])
    assert result["stdout"].strip() == "", (argv, result["stdout"])
    return lines[0]


def test_every_command_refuses_bad_input_in_one_line(paths) -> None:
    assert {argv[0] for argv, _ in CASES} >= _commands()
    cases = [{"argv": [_fill(a, paths) for a in argv]} for argv, _ in CASES]
    for case, result, (argv, wanted) in zip(cases, _drive(cases), CASES, strict=True):
        line = _one_error_line(result, case["argv"])
        prog = "descentlab" if argv[0] == "compar" else f"descentlab {argv[0]}"
        assert line.startswith(f"{prog}: error: "), line
        for text in wanted:
            assert _fill(text, paths) in line, (case["argv"], line)
        assert "secret" not in line
    # nothing was written by a refused command
    assert sorted(os.listdir(paths["folder"])) == []
    assert Path(paths["file"]).read_text() == "keep"
    assert sorted(os.listdir(paths["theirs"])) == ["report.html"]


def test_missing_packages_name_the_extra_that_brings_them(tmp_path) -> None:
    """A plain ``pip install descentlab`` (no extras): every command says what to install."""
    cases = [
        {"argv": ["compare", "--out", str(tmp_path / "c")]},
        {"argv": ["visualize", "--out", str(tmp_path / "v")]},
        {"argv": ["diagnose"]},
        {"argv": ["schedules", "--output", str(tmp_path / "s.png")]},
        {"argv": ["speed", "--json", str(tmp_path / "speed.json")]},
        {"argv": ["demo"]},
        {"argv": ["distributed", "--out", str(tmp_path / "d")]},
    ]
    for case, result in zip(cases, _drive(cases, hide=BENCH), strict=True):
        line = _one_error_line(result, case["argv"])
        assert "not installed: pip install 'descentlab[bench]'" in line, line
    assert sorted(os.listdir(tmp_path)) == []  # refused before anything was written
    listing, help_text = _drive([{"argv": ["list", "problems"]}, {"argv": ["--help"]}], hide=BENCH)
    assert listing["returncode"] == 0 and "rosenbrock" in listing["stdout"], listing
    assert help_text["returncode"] == 0 and "compare" in help_text["stdout"], help_text


def test_missing_database_driver_names_its_extra(tmp_path) -> None:
    argv = [
        "compare",
        "--optimizers",
        "sgd",
        "--problems",
        "square",
        "--storage",
        "postgresql://bob@127.0.0.1:1/db",
        "--out",
        str(tmp_path / "out"),
    ]
    [result] = _drive([{"argv": argv, "hide": ["psycopg", "psycopg2"]}])
    line = _one_error_line(result, argv)
    assert "the PostgreSQL driver is not installed: pip install 'descentlab[postgresql]'" in line
