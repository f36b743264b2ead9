"""Time the default ``descentlab compare`` (the goal: at most 5 minutes on 2 cores).

Runs ``descentlab compare`` with no options other than a fresh output folder,
exactly as a user would, in a subprocess; prints the leaderboard and a table
of wall time against the 300-second budget; writes the numbers to JSON.
Optionally takes the README screenshot of the report with headless Chromium.

    .venv/bin/python benchmarks/compare_default.py [--out DIR] [--json FILE]
                                                  [--screenshot docs/figures/report.png]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 300.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="output folder (default: a new temporary folder)")
    parser.add_argument(
        "--json",
        default="benchmarks/results/compare_default.json",
        help="where to write the measurements",
    )
    parser.add_argument("--screenshot", help="PNG path for a screenshot of report.html")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="descentlab-compare-"))
    command = [sys.executable, "-m", "descentlab", "compare", "--out", str(out), "--fresh"]
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time of the command and its worker processes (all waited for)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        print(done.stdout, done.stderr, sep="\n", file=sys.stderr)
        return done.returncode
    board = "\n".join(line for line in done.stdout.splitlines() if line.startswith("|"))
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(board)
    print()
    print("| case | wall time (s) | CPU time (s) | budget (s) | wall / budget |")
    print("|---|---|---|---|---|")
    print(
        f"| default `descentlab compare`, {os.cpu_count()} cores | {wall:.1f} | {cpu:.1f} "
        f"| {BUDGET_S:.0f} | {wall / BUDGET_S:.2f} |"
    )
    print(f"\nload average after the run: {load[0]:.1f} (1 min), {load[2]:.1f} (15 min)")
    record = {
        "command": "descentlab compare",
        "wall_time_s": wall,
        "budget_s": BUDGET_S,
        "ratio_to_budget": wall / BUDGET_S,
        "cpu_time_s": cpu,
        "cpu_count": os.cpu_count(),
        "loadavg_after": list(load),
        "leaderboard_markdown": board,
        "out": str(out),
        "stdout": done.stdout,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=1))
    if args.screenshot:
        from descentlab.bench.browser import chromium_missing, screenshot

        reason = chromium_missing()
        if reason:
            print(f"no screenshot: {reason}", file=sys.stderr)
        else:
            print(f"screenshot: {screenshot(out / 'report.html', args.screenshot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
