"""Run a whole comparison: check the input, do the missing work, score, export, report.

:func:`compare` is what ``descentlab compare`` calls::

    from descentlab.bench.harness import compare

    result = compare(optimizers=["sgd", "adam"], problems=["rosenbrock"], trials=8, seeds=2,
                     out="runs/demo")
    print(result.leaderboard_markdown)

Everything finished is in ``<out>/results.db`` as soon as it finishes; calling
again with the same arguments resumes (or, when all is done, only re-scores
and re-draws the report).
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from descentlab.bench.defaults import DEFAULT_SEEDS, DEFAULT_TRIALS
from descentlab.bench.entrants import SEED_FAMILY, Entrant, get_entrant
from descentlab.bench.errors import BenchError
from descentlab.bench.protocol import Protocol, run_unit, unit_done, unit_total
from descentlab.bench.results import Results, collect, export, leaderboard_text
from descentlab.bench.store import ResultStore
from descentlab.bench.workers import Job, run_jobs

__all__ = ["CompareResult", "compare", "resolve_names", "default_problems", "versions"]


@dataclass
class CompareResult:
    """Outcome of :func:`compare`."""

    results: Results
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    wall_time: float = 0.0
    work_done: int = 0
    work_total: int = 0

    @property
    def leaderboard_markdown(self) -> str:
        """The leaderboard as a Markdown table."""
        return leaderboard_text(self.results)


def default_problems() -> list[str]:
    """The default suite of problems (``descentlab.problems.DEFAULT_SUITE``)."""
    from descentlab.problems import DEFAULT_SUITE

    return list(DEFAULT_SUITE)


def _split(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(v).strip() for v in items if str(v).strip()]
    return names


def resolve_names(
    optimizers: str | Sequence[str] | None, problems: str | Sequence[str] | None
) -> tuple[list[Entrant], list[Any]]:
    """Turn names into entrants and problems; unknown names raise listing the valid ones."""
    from descentlab.problems import get_problem

    opt_names = _split(optimizers) or list(SEED_FAMILY)
    prob_names = _split(problems) or default_problems()
    for kind, names in (("optimizer", opt_names), ("problem", prob_names)):
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise BenchError(f"{kind} named more than once: {', '.join(dupes)}")
    try:
        entrants = [get_entrant(n) for n in opt_names]
        found = [get_problem(n) for n in prob_names]
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    return entrants, found


def _check_budget(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BenchError(f"{name} must be a positive integer (at least 1), got {value!r}")
    return value


def versions() -> dict[str, str]:
    """Versions of everything that affects results (recorded in the report)."""
    import numpy
    import optuna
    import torch

    import descentlab

    return {
        "descentlab": getattr(descentlab, "__version__", "?"),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": str(os.cpu_count()),
    }


def _progress_bar(enabled: bool, total: int, done: int) -> Any:
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]compare[/]"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True),
    )
    bar.start()
    bar.add_task("", total=total, completed=done)
    return bar


def compare(
    optimizers: str | Sequence[str] | None = None,
    problems: str | Sequence[str] | None = None,
    *,
    trials: int = DEFAULT_TRIALS,
    seeds: int = DEFAULT_SEEDS,
    seed: int = 0,
    out: str | os.PathLike[str] = "descentlab-compare",
    workers: int = 1,
    storage: str | None = None,
    fresh: bool = False,
    prune: bool = True,
    progress: bool = True,
    report: bool = True,
    command: str | None = None,
) -> CompareResult:
    """Compare ``optimizers`` on ``problems`` with the benchmark protocol; see the module doc.

    Defaults: the seeds' optimizer family on ``descentlab.problems.DEFAULT_SUITE``,
    ``trials`` tuning trials and ``seeds`` re-runs per (problem, optimizer).
    ``command`` (the command line, if any) is recorded in the report.
    Raises :class:`BenchError` for bad names, budgets, output folder or database.
    """
    start = time.perf_counter()
    trials = _check_budget("trials", trials)
    seeds = _check_budget("seeds", seeds)
    workers = _check_budget("workers", workers)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise BenchError(f"seed must be an integer >= 0, got {seed!r}")
    entrants, found = resolve_names(optimizers, problems)
    protocol = Protocol(
        trials=trials, seeds=seeds, seed=seed, startup_trials=min(4, trials), prune=prune
    )

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = ResultStore.open(out, storage, fresh=fresh)
    try:
        jobs, total, done = [], 0, 0
        for p in found:
            for e in entrants:
                finished = unit_done(store, p, e, protocol)
                total += unit_total(protocol)
                done += finished
                if finished < unit_total(protocol):
                    cost = p.steps * (5 if p.kind == "learning" else 1)
                    jobs.append(
                        (
                            cost * (unit_total(protocol) - finished),
                            Job(run_unit, (store, p, e, protocol), f"{p.name}/{e.name}"),
                        )
                    )
        jobs.sort(key=lambda item: -item[0])
        bar = _progress_bar(progress, total, done)
        count = done

        def on_progress(label: str) -> None:
            nonlocal count
            count += 1
            if bar is not None:
                bar.update(bar.task_ids[0], completed=count, description=label)

        try:
            run_jobs([job for _, job in jobs], workers, on_progress)
        finally:
            if bar is not None:
                bar.stop()
        if bar is not None:
            bar.console.print("scoring and writing the report …")
        results = collect(store, found, entrants, protocol)
        outdir = Path(out)
        wall = time.perf_counter() - start
        meta = {
            "versions": versions(),
            "wall_time_s": wall,
            "workers": workers,
            "storage": "local SQLite" if storage is None else "server",
            "command": command or "",
        }
        files = export(results, outdir, extra={"meta": meta})
        if report:
            from descentlab.bench.report import write_report

            files.update(write_report(results, outdir, meta=meta))
        wall = time.perf_counter() - start
        return CompareResult(results, outdir, files, wall, count - done, total)
    finally:
        store.close()


def format_seconds(seconds: float) -> str:
    """``83.2`` → ``"1 min 23.2 s"``."""
    if not math.isfinite(seconds):
        return "—"
    minutes, sec = divmod(seconds, 60)
    return f"{int(minutes)} min {sec:.1f} s" if minutes else f"{sec:.1f} s"
