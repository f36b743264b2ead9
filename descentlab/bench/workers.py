"""Doing the work of a comparison: in this process, in worker processes, with other machines.

Every process that does work runs :func:`work`: it goes through the units
(biggest first), claims the next ready item of a unit on the store's claim
board (:mod:`descentlab.bench.claims`), runs it, saves it, and stays on that
unit while it has claimable work; when every remaining item is held by
another live process it waits, taking over the items of processes that died.
It returns when every item is finished — by it or by anyone else — so every
process that shares a store ends with the same, complete results.

``--workers N`` runs :func:`work` in ``N`` worker processes of a
:class:`concurrent.futures.ProcessPoolExecutor`. On Linux they are forked, so
they start at once instead of importing torch again (seconds per worker on a
busy machine); elsewhere they are spawned. Each receives the store by
pickling and opens its own database connections (the parent closes its own
before forking). Each limits torch to one intra-op thread, so ``N`` workers
use ``N`` cores and results do not depend on ``N``. Workers report progress to
the parent through a queue.

Workers die with their parent: on Linux the kernel kills them when the parent
dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), elsewhere a watchdog thread
notices a new parent process id; and they close the parent's folder lock when
forked (:mod:`descentlab.bench.store`), so a ``kill -9`` of ``descentlab
compare`` alone leaves no process behind and the next run starts at once. If a
worker process dies (killed, out of memory) the pool is broken: the parent
stops the others and raises :class:`BenchError`; everything finished is
already in the store, and running the same command again resumes.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from descentlab.bench.errors import BenchError
from descentlab.bench.protocol import Unit, ready_items, run_item, still_ready

__all__ = ["work", "run_workers"]

_QUEUE: Any = None
PR_SET_PDEATHSIG = 1


def work(
    store: Any,
    units: Sequence[Unit],
    on_progress: Callable[[str], None] | None = None,
    poll: float = 1.0,
    on_idle: Callable[[], None] | None = None,
) -> int:
    """Do every item of ``units`` that no other live process is doing, until all are finished.

    ``on_progress(label)`` is called after each item this process saved,
    ``on_idle()`` before each wait for other processes. Returns how many items
    this process saved.
    """
    report = on_progress or (lambda label: None)
    pending = list(units)
    saved = 0
    with store.claim_board() as board:
        while pending:
            progressed = False
            for unit in list(pending):
                while True:
                    items = ready_items(store, unit)
                    if items is None:
                        pending.remove(unit)
                        break
                    item = next((i for i in items if board.claim(i.study, i.number)), None)
                    if item is None:  # held by other processes: come back later
                        break
                    store.fail_running(board.orphans)
                    board.orphans.clear()
                    try:
                        ok = still_ready(store, item) and run_item(store, item, board)
                    finally:
                        board.release(item.study, item.number)
                    progressed = True
                    if ok:
                        saved += 1
                        report(unit.label)
            if pending and not progressed:
                if on_idle is not None:
                    on_idle()
                time.sleep(poll)
    return saved


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="descentlab-parent-watch", daemon=True).start()


def _init_worker(progress_queue: Any, parent: int) -> None:
    global _QUEUE
    _die_with_parent(parent)
    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _QUEUE = progress_queue


def _work_in_worker(store: Any, units: Sequence[Unit], poll: float) -> int:
    return work(store, units, lambda label: _QUEUE.put(label), poll)


def _drain(q: Any, on_progress: Callable[[str], None]) -> None:
    while True:
        try:
            label = q.get_nowait()
        except (queue_mod.Empty, OSError, EOFError):
            return
        on_progress(label)


def run_workers(
    store: Any,
    units: Sequence[Unit],
    workers: int,
    on_progress: Callable[[str], None] | None = None,
    on_idle: Callable[[], None] | None = None,
    poll: float = 1.0,
) -> int:
    """Run :func:`work` on ``workers`` processes (in this one if ``workers == 1``).

    ``on_progress(label)`` is called in this process each time a trial or run
    finishes here; ``on_idle()`` about every ``poll`` seconds while workers
    run. Returns how many items were saved by this run's processes.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise BenchError(f"workers must be an integer >= 1, got {workers!r}")
    report = on_progress or (lambda label: None)
    if workers == 1 or len(units) <= 1:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return work(store, units, report, poll, on_idle)
        finally:
            torch.set_num_threads(threads)
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    progress_queue = ctx.Queue()
    count = min(workers, len(units))
    store.disconnect()  # no open connection may be shared with forked children
    executor = ProcessPoolExecutor(
        max_workers=count,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(progress_queue, os.getpid()),
    )
    saved = 0
    last_idle = time.monotonic()
    try:
        pending = {executor.submit(_work_in_worker, store, units, poll) for _ in range(count)}
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            _drain(progress_queue, report)
            for future in done:
                saved += future.result()
            if on_idle is not None and time.monotonic() - last_idle >= poll:
                on_idle()
                last_idle = time.monotonic()
        _drain(progress_queue, report)
    except BrokenProcessPool:
        raise BenchError(
            "a worker process died before finishing (was it killed?); every finished trial "
            "and run is saved, so running the same command again resumes where it stopped"
        ) from None
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        progress_queue.close()
    return saved
