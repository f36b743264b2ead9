"""Run a function on several local processes joined by a ``torch.distributed`` group.

:func:`run_ranks` starts ``world_size`` processes on this machine, joins them
into one process group (gloo by default) that talks over the loopback
interface only, calls ``fn(rank, world_size, *args)`` in each and returns the
per-rank results, in rank order.

Ports are never guessed: once the children have started, the parent opens
the rendezvous store (``torch.distributed.TCPStore``) on ``127.0.0.1`` port 0,
so the operating system picks a free port while the parent holds it, and
sends the port to the children through a pipe; gloo's own connections are
ephemeral ports on ``lo`` (``GLOO_SOCKET_IFNAME``). (The store is opened after
the children start, so a forked child never inherits the store's thread.)
Everything is bounded in time: the collectives time out after ``timeout``
seconds, and the parent kills every child still running at the deadline and
raises :class:`TimeoutError`. A child's exception is
re-raised in the parent as :class:`RankError` with the child's traceback,
and on Linux the children die with the parent.
"""

from __future__ import annotations

import datetime
import importlib
import multiprocessing as mp
import os
import pickle
import queue as queue_mod
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["RankError", "run_ranks", "LOOPBACK"]

#: The only address the process group uses.
LOOPBACK = "127.0.0.1"


class RankError(RuntimeError):
    """A rank raised an exception; the message carries its traceback."""


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this process when its parent dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _child(
    fn: Callable[..., Any],
    rank: int,
    world_size: int,
    port_pipe: Any,
    backend: str,
    timeout: float,
    threads: int,
    args: tuple[Any, ...],
    results: Any,
    parent: int,
) -> None:
    _die_with_parent(parent)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    import torch
    import torch.distributed as dist

    if threads:
        torch.set_num_threads(threads)
    try:
        if not port_pipe.poll(timeout):
            raise TimeoutError("no rendezvous port from the parent")
        port = port_pipe.recv()
        limit = datetime.timedelta(seconds=timeout)
        store = dist.TCPStore(LOOPBACK, port, world_size, is_master=False, timeout=limit,
                              wait_for_workers=False)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                                timeout=limit)
        try:
            value = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        # pickled here, by value: torch's queue pickler would share tensors through
        # file descriptors, which die with this process
        results.put((rank, True, pickle.dumps(value)))
    except BaseException as exc:  # reported to the parent, which re-raises
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        results.put((rank, False, text))


def run_ranks(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    backend: str = "gloo",
    timeout: float = 300.0,
    threads: int = 1,
    start_method: str = "spawn",
    preload: tuple[str, ...] = (),
    collective_timeout: float | None = None,
) -> list[Any]:
    """Call ``fn(rank, world_size, *args)`` on ``world_size`` joined processes; return the results.

    Args:
        fn: a module-level function (it is pickled into the children); its
            return value must pickle too.
        world_size: number of processes, ``>= 1``.
        backend: the process-group backend (``"gloo"`` runs on CPU).
        timeout: seconds for the whole run (the parent's deadline), and for
            the rendezvous and every collective unless ``collective_timeout``
            is given.
        threads: torch intra-op threads per process (``0`` keeps torch's
            default); one by default, so that ranks do not fight for cores.
        start_method: ``"spawn"`` (a fresh interpreter per rank, safe
            everywhere) or ``"fork"`` (instant on Linux; only from a process
            that has not started threads of its own).
        preload: modules to import in this process before forking, so that
            forked ranks inherit them. ``("torch._dynamo",)`` saves each rank
            the ~4 s that constructing ``DistributedDataParallel`` spends
            importing it.
        collective_timeout: seconds any one collective may wait (a long run
            of many short jobs wants a tight bound here and a loose ``timeout``).

    Ranks are killed when this process dies, even by SIGKILL (Linux), so a
    killed run leaves no orphans behind.

    Raises:
        ValueError: a bad ``world_size``, ``timeout`` or ``start_method``.
        RankError: a rank raised; the message holds its traceback.
        TimeoutError: the run did not finish within ``timeout`` seconds.
    """
    import torch.distributed as dist

    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    if start_method not in ("spawn", "fork", "forkserver"):
        raise ValueError(
            f"start_method must be 'spawn', 'fork' or 'forkserver', got {start_method!r}"
        )
    if start_method == "fork":
        for name in preload:
            importlib.import_module(name)
    ctx = mp.get_context(start_method)
    results = ctx.Queue()
    pipes = [ctx.Pipe(duplex=False) for _ in range(world_size)]
    procs = [
        ctx.Process(
            target=_child,
            args=(fn, rank, world_size, pipes[rank][0], backend, collective_timeout or timeout,
                  threads, args, results, os.getpid()),
            daemon=True,
        )
        for rank in range(world_size)
    ]
    for proc in procs:
        proc.start()
    store = dist.TCPStore(LOOPBACK, 0, world_size + 1, is_master=True,
                          timeout=datetime.timedelta(seconds=timeout), wait_for_workers=False)
    for _, sender in pipes:
        sender.send(store.port)
    deadline = time.monotonic() + timeout
    outcome: dict[int, tuple[bool, Any]] = {}
    try:
        while len(outcome) < world_size:
            try:
                rank, ok, value = results.get(timeout=0.2)
                outcome[rank] = (ok, value)
                if not ok:
                    break
                continue
            except queue_mod.Empty:
                pass
            dead = [p for r, p in enumerate(procs) if r not in outcome and not p.is_alive()]
            if dead and results.empty():
                time.sleep(0.5)  # a result may still be in the pipe
                if results.empty():
                    codes = ", ".join(f"exit code {p.exitcode}" for p in dead)
                    raise RankError(f"a rank died without a result ({codes})")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"run_ranks: {world_size} ranks did not finish within {timeout:g} s"
                )
    finally:
        for proc in procs:
            proc.join(timeout=5 if len(outcome) == world_size else 0.5)
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        results.close()
        del store
    failed = [(r, v) for r, (ok, v) in sorted(outcome.items()) if not ok]
    if failed:
        rank, text = failed[0]
        raise RankError(f"rank {rank} of {world_size} failed:\n{text}")
    return [pickle.loads(outcome[r][1]) for r in range(world_size)]
