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
from descentlab.bench.entrants import SEED_FAMILY, Entrant, available_entrants, get_entrant
from descentlab.bench.errors import BenchError
from descentlab.bench.outputs import OutputSet
from descentlab.bench.protocol import Protocol, Unit, unit_done, unit_total
from descentlab.bench.results import Results, collect, export, leaderboard_text
from descentlab.bench.store import DEFAULT_STALE_AFTER, ResultStore
from descentlab.bench.workers import run_workers
from descentlab.checks import check_names, check_positive_int, check_seed
from descentlab.machine import cpu_model

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
    work_elsewhere: int = 0
    """Items finished meanwhile by other processes sharing the store."""

    @property
    def leaderboard_markdown(self) -> str:
        """The leaderboard as a Markdown table."""
        return leaderboard_text(self.results)


def default_problems() -> list[str]:
    """The default suite of problems (``descentlab.problems.DEFAULT_SUITE``)."""
    from descentlab.problems import DEFAULT_SUITE

    return list(DEFAULT_SUITE)


def resolve_names(
    optimizers: str | Sequence[str] | None,
    problems: str | Sequence[str] | None,
    suite: str | None = None,
) -> tuple[list[Entrant], list[Any]]:
    """Turn names into entrants and problems; unknown names raise with a suggestion and the
    valid ones.

    The problems are ``problems`` if given, else those of the named ``suite``
    (``descentlab.problems.get_suite``), else the default suite.
    """
    from descentlab.problems import available_problems, get_problem, get_suite

    if suite is not None and problems:
        raise BenchError("give either problems or a suite, not both")
    try:
        opt_names = check_names(optimizers or list(SEED_FAMILY), available_entrants(), "optimizer")
        chosen = problems or (get_suite(suite).problems if suite is not None else None)
        prob_names = check_names(chosen or default_problems(), available_problems(), "problem")
    except (TypeError, ValueError) as exc:
        raise BenchError(str(exc)) from None
    return [get_entrant(n) for n in opt_names], [get_problem(n) for n in prob_names]


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
        "cpu": cpu_model(),
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
    suite: str | None = None,
    trials: int = DEFAULT_TRIALS,
    seeds: int = DEFAULT_SEEDS,
    seed: int = 0,
    out: str | os.PathLike[str] = "descentlab-compare",
    workers: int = 1,
    storage: str | None = None,
    fresh: bool = False,
    force: bool = False,
    stale_after: float = DEFAULT_STALE_AFTER,
    prune: bool = True,
    progress: bool = True,
    report: bool = True,
    command: str | None = None,
) -> CompareResult:
    """Compare ``optimizers`` on ``problems`` with the benchmark protocol; see the module doc.

    Defaults: the seeds' optimizer family on ``descentlab.problems.DEFAULT_SUITE``
    (or on the problems of the named ``suite``, e.g. ``"deep"``),
    ``trials`` tuning trials and ``seeds`` re-runs per (problem, optimizer).
    ``command`` (the command line, if any) is recorded in the report.
    ``storage`` shares the work with every other process using the same
    database (``stale_after``: seconds of silence after which a process's
    claimed work is taken over); each process returns once all of it is done.
    ``force`` writes into an output folder descentlab did not create.
    Raises :class:`BenchError` for bad names, budgets, output folder or database,
    before any work starts.
    """
    start = time.perf_counter()
    try:
        trials = check_positive_int(trials, "trials")
        seeds = check_positive_int(seeds, "seeds")
        workers = check_positive_int(workers, "workers")
        # the re-runs use seed + 1 … seed + seeds: all of them must be valid seeds
        seed = check_seed(seed, "seed", span=seeds + 1)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    entrants, found = resolve_names(optimizers, problems, suite)
    protocol = Protocol(
        trials=trials, seeds=seeds, seed=seed, startup_trials=min(4, trials), prune=prune
    )

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = ResultStore.open(out, storage, fresh=fresh, force=force, stale_after=stale_after)
    try:
        units = [Unit(p, e, protocol) for p in found for e in entrants]
        left = {id(u): unit_total(protocol) - unit_done(store, u) for u in units}
        total = len(units) * unit_total(protocol)
        done = total - sum(left.values())
        # the biggest remaining work first, so that no long unit starts last
        todo = sorted((u for u in units if left[id(u)]), key=lambda u: -u.cost * left[id(u)])
        bar = _progress_bar(progress, total, done)
        count = done

        def on_progress(label: str) -> None:
            nonlocal count
            count += 1
            if bar is not None:
                bar.update(bar.task_ids[0], completed=count, description=label)

        def on_idle() -> None:  # other processes' work, seen while waiting for them
            nonlocal count
            count = sum(unit_done(store, u) for u in units)
            if bar is not None:
                bar.update(bar.task_ids[0], completed=count, description="waiting for others")

        try:
            saved = run_workers(
                store,
                todo,
                workers,
                on_progress,
                on_idle if storage is not None else None,
                poll=min(1.0, store.stale_after / 5),
            )
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
        with OutputSet(outdir) as staged:
            files = export(results, staged.folder, extra={"meta": meta})
            if report:
                from descentlab.bench.report import write_report

                files.update(write_report(results, staged.folder, meta=meta))
        files = {name: staged.final_path(path) for name, path in files.items()}
        wall = time.perf_counter() - start
        return CompareResult(
            results, outdir, files, wall, saved, total, total - done - saved
        )
    finally:
        store.close()


def format_seconds(seconds: float) -> str:
    """``83.2`` → ``"1 min 23.2 s"``."""
    if not math.isfinite(seconds):
        return "—"
    minutes, sec = divmod(seconds, 60)
    return f"{int(minutes)} min {sec:.1f} s" if minutes else f"{sec:.1f} s"
