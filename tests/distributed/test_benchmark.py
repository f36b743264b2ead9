"""``descentlab distributed --quick``: real ranks, killed mid-run, resumed, outputs checked.

The benchmark's parent process is killed with SIGKILL after its first
results; its ranks must die with it (nothing keeps writing), and the same
command then finishes without redoing or losing a finished run.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from descentlab.distributed import benchmark as bench

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")

METHODS = "dense,fp16,powersgd-1,threshold-sign-0.05,topk-0.05,dgc-0.05,sign"
JOBS = 2 * len(METHODS.split(","))


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "descentlab", "distributed", "--quick", "--steps", "12",
            "--methods", METHODS, "--no-progress", "--out", str(out)]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _ours_alive(out: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(out).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_quick_benchmark_killed_and_resumed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(_command(out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 240
    while len(_lines(results)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    while _ours_alive(out) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _ours_alive(out), "ranks outlived their killed parent"
    before = _lines(results)
    assert 2 <= len(before) < JOBS

    done = subprocess.run(_command(out), env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    after = _lines(results)
    assert after[: len(before)] == before  # finished runs kept as they were
    records = [json.loads(line) for line in after]
    assert len({r["fingerprint"] for r in records}) == len(records) == JOBS  # none redone

    summary = json.loads((out / "summary.json").read_text())
    rows = {(r["task"], r["method"]): r for r in summary["rows"]}
    assert len(rows) == JOBS
    for task in ("digits_cnn", "stdlib_char_transformer"):
        assert rows[task, "dense"]["ratio_sent"] == 1.0
        assert rows[task, "fp16"]["ratio_sent"] == 2.0  # fp16 all-reduce: half the bytes
        assert rows[task, "sign"]["ratio_sent"] > 25
        assert rows[task, "topk-0.05"]["ratio_sent"] > 5
        assert all(r["ranks_agree"] for r in summary["rows"])
        assert all(math.isfinite(rows[task, m]["metric_mean"]) for m in ("dense", "topk-0.05"))
    assert set(summary["goals"]) == {"digits_cnn", "stdlib_char_transformer"}
    assert (out / "bytes_vs_metric.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "http://" not in page and "https://" not in page
    assert "| topk-0.05 |" in (out / "table.md").read_text()
    assert "digits_cnn" in done.stdout


def _record(task: str, method: str, seed: int, metric: float, sent: float) -> dict:
    return {"task": task, "method": method, "seed": seed, "metric": metric,
            "metric_name": "val_accuracy" if task == "digits_cnn" else "val_loss",
            "sent_per_step": sent, "received_per_step": 3 * sent, "compute_s_per_step": 0.01,
            "steps": 100, "wall_s": 2.0, "ranks_agree": True, "load_average": 1.0}


def test_aggregate_and_goals_arithmetic() -> None:
    records = [
        *[_record("digits_cnn", "dense", s, 0.98 + 0.002 * s, 8000) for s in range(3)],
        *[_record("digits_cnn", "topk-0.01", s, 0.978 + 0.002 * s, 70) for s in range(3)],
        *[_record("digits_cnn", "dgc-0.001", s, 0.95, 40) for s in range(3)],
        *[_record("digits_cnn", "powersgd-1", s, 0.97, 900) for s in range(3)],
        *[_record("stdlib_char_transformer", "dense", s, 2.0, 1e5) for s in range(3)],
        *[_record("stdlib_char_transformer", "topk-0.01", s, 2.05, 900) for s in range(3)],
        *[_record("stdlib_char_transformer", "powersgd-1", s, 2.01, 8000) for s in range(3)],
        *[_record("stdlib_char_transformer", "sign", s, math.nan, 100) for s in range(3)],
    ]
    rows = {(r["task"], r["method"]): r for r in bench.aggregate(records)}
    topk = rows["digits_cnn", "topk-0.01"]
    assert topk["metric_mean"] == pytest.approx(0.98)
    assert topk["metric_std"] == pytest.approx(0.002)
    assert topk["ratio_sent"] == pytest.approx(8000 / 70)
    assert topk["ratio_received"] == pytest.approx(8000 / 210)
    # modelled: 100 steps x (10 ms + max(70, 210) B x 8 / 1 Gbit/s)
    assert topk["modelled_s"]["1"] == pytest.approx(100 * (0.01 + 210 * 8 / 1e9))
    goals = bench.goals(list(rows.values()))
    digits = goals["digits_cnn"]
    assert digits["a_met"]  # 114x, 0.98 >= 0.982 - 0.005
    assert digits["a_best_ratio_within_limit"]["method"] == "topk-0.01"
    assert digits["b_met"] and digits["b_ours_as_good"]["method"] == "topk-0.01"
    lm = goals["stdlib_char_transformer"]
    assert not lm["a_met"]  # 111x but 2.05 > 2.0 x 1.02
    assert lm["a_best_metric_at_100x"]["method"] == "topk-0.01"  # not the diverged one
    assert lm["a_best_metric_at_100x"]["miss"] == pytest.approx(0.025)
    assert not lm["b_met"]  # PowerSGD's 2.01 beats ours
