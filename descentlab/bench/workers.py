"""Parallel worker processes on one machine (``--workers N``).

Work is split into *units*, one per (problem, entrant): a unit tunes and then
re-runs one entrant on one problem, so each Optuna study is used by one
process at a time and its trials stay sequential (which keeps the sampler
reproducible, see :mod:`descentlab.bench.protocol`). Units run in a
:class:`concurrent.futures.ProcessPoolExecutor`. On Linux the workers are
forked, so they start at once instead of importing torch again (seconds per
worker on a busy machine); each receives the store by pickling and opens its
own database connection, and never touches the parent's. Elsewhere they are
spawned. Each worker limits torch to one intra-op thread, so ``N`` workers use
``N`` cores and results do not depend on ``N``. Workers write every
finished trial and run to the store themselves and report progress to the
parent through a queue.

If a worker process dies (killed, out of memory) the pool is broken: the
parent stops the others and raises :class:`BenchError`; everything finished
is already in the store, and running the same command again resumes.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from descentlab.bench.errors import BenchError

__all__ = ["Job", "run_jobs"]

_QUEUE: Any = None


@dataclass(frozen=True)
class Job:
    """One unit of work: ``fn(*args, progress=callback)``; ``label`` names it in progress."""

    fn: Callable[..., None]
    args: tuple[Any, ...]
    label: str


def _init_worker(progress_queue: Any) -> None:
    global _QUEUE
    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _QUEUE = progress_queue


def _run_in_worker(job: Job) -> str:
    job.fn(*job.args, progress=lambda: _QUEUE.put(job.label))
    return job.label


def _drain(q: Any, on_progress: Callable[[str], None]) -> None:
    while True:
        try:
            label = q.get_nowait()
        except (queue_mod.Empty, OSError, EOFError):
            return
        on_progress(label)


def run_jobs(
    jobs: Sequence[Job], workers: int, on_progress: Callable[[str], None] | None = None
) -> None:
    """Run ``jobs`` on ``workers`` processes (in this process if ``workers == 1``).

    ``on_progress(label)`` is called in this process each time a trial or run
    of a job finishes.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise BenchError(f"--workers must be an integer >= 1, got {workers!r}")
    report = on_progress or (lambda label: None)
    if workers == 1 or len(jobs) <= 1:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for job in jobs:
                job.fn(*job.args, progress=lambda job=job: report(job.label))
        finally:
            torch.set_num_threads(threads)
        return
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    progress_queue = ctx.Queue()
    executor = ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(progress_queue,),
    )
    try:
        pending = {executor.submit(_run_in_worker, job) for job in jobs}
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            _drain(progress_queue, report)
            for future in done:
                future.result()
        _drain(progress_queue, report)
    except BrokenProcessPool:
        raise BenchError(
            "a worker process died before finishing (was it killed?); every finished trial "
            "and run is saved, so running the same command again resumes where it stopped"
        ) from None
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        progress_queue.close()
