"""Overhead of the TrainingMonitor on the training step, measured in one process.

For each model, the same training step (forward, backward, optimizer step,
record the loss) is timed without a monitor and with the monitor at several
intervals (1 = every step measured; the default interval always included).
Blocks of steps of each variant are interleaved and repeated; the overhead
is the median of each monitored block's time divided by the no-monitor
block just before it (same model and optimizer; the monitor is attached
and detached around its block). Times are CPU time of the process by
default (one thread: the work done, not inflated by other processes on a
shared machine); ``--clock wall`` uses wall time. Goal: at most 5% at the
default interval.

    .venv/bin/python benchmarks/monitor_overhead.py [--steps 100] [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from descentlab.commands import arguments as a
from descentlab.diagnostics.monitor import DEFAULT_INTERVAL, TrainingMonitor
from descentlab.diagnostics.problems import deep_mlp, load_digits_data
from descentlab.init import init_model

#: The clock: CPU time of this process (``--clock cpu``, default) or wall time
#: (``--clock wall``). With one thread, CPU time is the work done and is not
#: inflated when other processes share the cores; wall time is.
CLOCK = time.process_time


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 64, 10),
    )


MODELS = {
    "mlp 3x256": lambda: deep_mlp(3, 256),
    "mlp 30x64 (many small layers)": lambda: deep_mlp(30, 64),
    "cnn 2 conv + linear": _cnn,
}


def _time_block(model, opt, monitor, x, y, steps: int) -> float:
    start = CLOCK()
    for i in range(steps):
        j = (i * 64) % (len(x) - 64)
        loss = nn.functional.cross_entropy(model(x[j : j + 64]), y[j : j + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if monitor is not None:
            monitor.record_loss(loss)
        else:
            float(loss.detach())  # the same synchronisation a training loop's logging does
    return (CLOCK() - start) / steps


def measure(name: str, intervals: list[int], steps: int, repeats: int) -> dict[str, object]:
    """Time per step of model ``name`` without a monitor and at each interval.

    One model and optimizer serve every variant: for a monitored block a
    monitor is attached before it and detached after it, so the variants
    differ only by the monitor. Blocks are interleaved; each monitored
    block's time is divided by the preceding no-monitor block's time, so
    load changes on a shared machine cancel. Returns the median time per
    step of each variant and the median of its paired ratios.
    """
    data = load_digits_data()
    x, y = data.x_train, data.y_train
    torch.manual_seed(0)
    model = MODELS[name]()
    init_model(model, "kaiming_normal")
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    _time_block(model, opt, None, x, y, 20)  # warm-up

    def monitored(interval: int) -> float:
        mon = TrainingMonitor(model, opt, interval=interval)
        try:
            return _time_block(model, opt, mon, x, y, steps)
        finally:
            mon.detach()

    monitored(intervals[0])  # warm-up of the monitor's code paths
    times: dict[int | None, list[float]] = {None: [], **{k: [] for k in intervals}}
    ratios: dict[int, list[float]] = {k: [] for k in intervals}
    for _ in range(repeats):
        for k in intervals:
            base = _time_block(model, opt, None, x, y, steps)
            t = monitored(k)
            times[None].append(base)
            times[k].append(t)
            ratios[k].append(t / base)
    return {
        "ms_per_step": {str(k): 1e3 * statistics.median(v) for k, v in times.items()},
        "overhead": {str(k): statistics.median(v) - 1 for k, v in ratios.items()},
    }


def main() -> None:
    """Run every model, print a markdown table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=a.positive_int, default=100, help="steps per timed block")
    parser.add_argument("--repeats", type=a.positive_int, default=15,
                        help="interleaved blocks per variant")
    parser.add_argument("--threads", type=a.positive_int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument(
        "--intervals", type=a.positive_int, nargs="+", default=sorted({1, 10, DEFAULT_INTERVAL})
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/monitor_overhead.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    intervals = sorted(set(args.intervals) | {DEFAULT_INTERVAL})
    rows = []
    for name in MODELS:
        rows.append({"model": name, **measure(name, intervals, args.steps, args.repeats)})
    print(
        f"Monitor overhead: Adam, batch 64, digits, {args.threads} thread(s), {args.clock} "
        f"time; median over "
        f"{args.repeats} interleaved blocks of {args.steps} steps; overhead = median of the "
        "ratios of each monitored block to the no-monitor block just before it (same model "
        "and optimizer)\n"
    )
    head = " | ".join(
        f"interval {k}{' (default)' if k == DEFAULT_INTERVAL else ''}" for k in intervals
    )
    print(f"| model | no monitor (ms/step) | {head} |")
    print("|---|---|" + "---|" * len(intervals))
    for r in rows:
        ms, ov = r["ms_per_step"], r["overhead"]
        cells = " | ".join(f"{ms[str(k)]:.3f} ms ({ov[str(k)]:+.1%})" for k in intervals)
        print(f"| {r['model']} | {ms['None']:.3f} | {cells} |")
    worst = max(r["overhead"][str(DEFAULT_INTERVAL)] for r in rows)
    verdict = "met" if worst <= 0.05 else "NOT met"
    print(
        f"\nworst overhead at the default interval ({DEFAULT_INTERVAL}): {worst:+.1%} "
        f"(goal: <= +5%) -> {verdict}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "monitor_overhead",
        "default_interval": DEFAULT_INTERVAL,
        "threads": args.threads,
        "clock": args.clock,
        "steps": args.steps,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "rows": rows,
        "worst_overhead_default_interval": worst,
        "goal": 0.05,
        "goal_met": worst <= 0.05,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
