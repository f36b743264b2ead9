"""Time the default ``descentlab compare`` (the goal: at most 5 minutes on 2 cores).

Runs ``descentlab compare`` with no options other than a fresh output folder,
exactly as a user would, in a subprocess; prints the leaderboard and a table
of wall time against the 300-second budget; writes the numbers to JSON.
Optionally takes the README screenshot of the report with headless Chromium.
With ``--suite NAME`` (and ``--trials``/``--seeds``) it times that suite
instead, against no budget, and writes ``compare_NAME.json``.

    .venv/bin/python benchmarks/compare_default.py [--out DIR] [--json FILE]
                                                  [--screenshot docs/figures/report.png]
    .venv/bin/python benchmarks/compare_default.py --suite deep --trials 8 --seeds 3
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

from descentlab.commands import arguments as a

BUDGET_S = 300.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="output folder (default: a new temporary folder)")
    parser.add_argument(
        "--json",
        help="where to write the measurements (default benchmarks/results/compare_SUITE.json)",
    )
    parser.add_argument("--screenshot", help="PNG path for a screenshot of report.html")
    parser.add_argument("--suite", help="time `descentlab compare --suite NAME` (no budget)")
    parser.add_argument("--trials", type=a.positive_int, help="passed to descentlab compare")
    parser.add_argument("--seeds", type=a.positive_int, help="passed to descentlab compare")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the results in --out instead of starting fresh (times this sitting only)",
    )
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="descentlab-compare-"))
    options = [
        f"--{name}={getattr(args, name)}"
        for name in ("suite", "trials", "seeds")
        if getattr(args, name) is not None
    ]
    json_path = args.json or f"benchmarks/results/compare_{args.suite or 'default'}.json"
    budget = BUDGET_S if not options else None
    command = [sys.executable, "-m", "descentlab", "compare", *options, "--out", str(out),
               "--resume" if args.resume else "--fresh"]
    load_before = os.getloadavg()
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
    case = " ".join(["descentlab compare", *options])
    print("| case | wall time (s) | CPU time (s) | budget (s) | wall / budget |")
    print("|---|---|---|---|---|")
    print(
        f"| `{case}`, {os.cpu_count()} cores | {wall:.1f} | {cpu:.1f} "
        + (f"| {budget:.0f} | {wall / budget:.2f} |" if budget else "| — | — |")
    )
    print(f"\nload average before the run: {load_before[0]:.1f} (1 min); after: "
          f"{load[0]:.1f} (1 min), {load[2]:.1f} (15 min)")
    record = {
        "command": case,
        "resumed": args.resume,
        "wall_time_s": wall,
        "budget_s": budget,
        "ratio_to_budget": wall / budget if budget else None,
        "cpu_time_s": cpu,
        "cpu_count": os.cpu_count(),
        "loadavg_before": list(load_before),
        "loadavg_after": list(load),
        "leaderboard_markdown": board,
        "out": str(out),
        "stdout": done.stdout,
    }
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(record, indent=1))
    if args.screenshot:
        from browser import chromium_missing, screenshot

        reason = chromium_missing()
        if reason:
            print(f"no screenshot: {reason}", file=sys.stderr)
        else:
            print(f"screenshot: {screenshot(out / 'report.html', args.screenshot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
