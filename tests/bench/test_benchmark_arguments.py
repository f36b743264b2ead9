"""The benchmark scripts refuse bad arguments before any work, as the commands do: exit 2,
one line naming the argument and the value, no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CASES = [
    ("advise_lr_grid.py", ["--momenta", "abc"], "--momenta", "'abc'"),
    ("advise_lr_grid.py", ["--lrs", "0,1"], "--lrs", "'0,1'"),
    ("advise_lr_grid.py", ["--candidates", "adamx"], "--candidates", "did you mean 'adamw'"),
    ("advise_lr_grid.py", ["--seeds", "3-x"], "--seeds", "'3-x'"),
    ("advise_oracle_check.py", [], "--oracle-out", "required"),
    ("advise_oracle_check.py", ["--oracle-out", "oracle", "--seeds", "3,3"], "--seeds", "'3,3'"),
    ("advise_validation.py", ["--budget", "2"], "--budget", "'2'"),
    ("advise_validation.py", ["--problems", "rosenbrok"], "--problems",
     "did you mean 'rosenbrock'"),
    ("advise_validation.py", ["--oracle-entrants", "adamz"], "--oracle-entrants", "'adamz'"),
    ("muon_speed.py", ["--repeats", "0"], "--repeats", "'0'"),
    ("adafactor_passes.py", ["--size", "0"], "--size", "'0'"),
    ("preconditioner_speed.py", ["--threads", "0"], "--threads", "'0'"),
    ("shape_batching.py", ["--repeats", "abc"], "--repeats", "'abc'"),
    ("small_stacks.py", ["--busy", "-1"], "--busy", "'-1'"),
    ("aliasing_costs.py", ["--threads", "-1"], "--threads", "'-1'"),
    ("low_precision_state.py", ["--seeds", "0"], "--seeds", "'0'"),
]


@pytest.mark.parametrize(("script", "args", "argument", "shown"), CASES,
                         ids=[f"{c[0]}{' '.join(c[1])}" for c in CASES])
def test_bad_argument_exits_2_with_one_line(script, args, argument, shown, tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert argument in error and shown in error, error
    assert not any(tmp_path.iterdir())  # nothing written
