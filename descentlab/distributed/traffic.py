"""Counting the bytes each rank hands to the collectives, and the time it waits in them.

One rule for every method, ours and torch's alike, applied to the tensors a
rank hands to a collective:

* ``all_reduce(t)``: sent ``t.nbytes``, received ``t.nbytes`` (the reduced
  result that replaces ``t``);
* ``all_gather(outputs, t)``: sent ``t.nbytes``, received the bytes of the
  ``world_size − 1`` output tensors that hold the other ranks' data.

This counts what a rank contributes and what it obtains, not the traffic a
particular algorithm puts on the wire (a ring all-reduce moves
``2 (W − 1) / W · t.nbytes`` each way; a ring all-gather forwards
``(W − 1) · t.nbytes``).

Collectives are run to completion where they are called (our own calls go
to ``torch.distributed.distributed_c10d``, so they are never counted twice)
and the wait is timed, so ``seconds`` is the time a rank spent in communication (including
waiting for slower ranks) and the rest of a step is computation. Our hooks
call :func:`all_reduce` and :func:`all_gather` below; torch's hooks are
counted by running them inside :func:`counting_torch_collectives`, which
routes ``torch.distributed.all_reduce`` / ``all_gather`` through the same
counter while it is active.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed import distributed_c10d as c10d

__all__ = [
    "Traffic",
    "all_gather",
    "all_gather_varlen",
    "all_reduce",
    "counting_torch_collectives",
]


@dataclass
class Traffic:
    """Bytes sent and received, collectives called, and seconds spent in them, for one rank."""

    sent: int = 0
    received: int = 0
    collectives: int = 0
    seconds: float = 0.0

    def add(self, sent: int, received: int, seconds: float) -> None:
        """Record one collective."""
        self.sent += sent
        self.received += received
        self.collectives += 1
        self.seconds += seconds

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict."""
        return asdict(self)


def _size(group: Any) -> int:
    return dist.get_world_size(group)


def all_reduce(traffic: Traffic | None, tensor: Tensor, group: Any = None) -> Tensor:
    """Sum ``tensor`` over the ranks in place (synchronously), counting it; return ``tensor``."""
    start = time.perf_counter()
    c10d.all_reduce(tensor, group=group)
    if traffic is not None:
        traffic.add(tensor.nbytes, tensor.nbytes, time.perf_counter() - start)
    return tensor


def all_gather(traffic: Traffic | None, tensor: Tensor, group: Any = None) -> list[Tensor]:
    """Every rank's ``tensor`` (all of the same shape), in rank order, counting it."""
    world = _size(group)
    outputs = [torch.empty_like(tensor) for _ in range(world)]
    start = time.perf_counter()
    c10d.all_gather(outputs, tensor.contiguous(), group=group)
    if traffic is not None:
        traffic.add(tensor.nbytes, (world - 1) * tensor.nbytes, time.perf_counter() - start)
    return outputs


_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def counting_torch_collectives(traffic: Traffic) -> Iterator[Traffic]:
    """Count every ``torch.distributed.all_reduce``/``all_gather`` call made inside the block.

    Meant for torch's own DDP hooks (allreduce, fp16, PowerSGD), which call
    ``torch.distributed.all_reduce(t, async_op=True)``: the call is completed
    and timed at once (so no communication overlaps computation, the same as
    in our hooks) and the finished work handle is returned. The original
    functions are restored when the block ends.
    """
    with _PATCH_LOCK:
        original_reduce, original_gather = dist.all_reduce, dist.all_gather

        def counted_reduce(tensor: Tensor, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            work = original_reduce(tensor, *args, **kwargs)
            if work is not None:
                work.wait()
            traffic.add(tensor.nbytes, tensor.nbytes, time.perf_counter() - start)
            return work

        def counted_gather(outputs: list[Tensor], tensor: Tensor, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            work = original_gather(outputs, tensor, *args, **kwargs)
            if work is not None:
                work.wait()
            received = sum(t.nbytes for t in outputs) - tensor.nbytes
            traffic.add(tensor.nbytes, received, time.perf_counter() - start)
            return work

        dist.all_reduce, dist.all_gather = counted_reduce, counted_gather
        try:
            yield traffic
        finally:
            dist.all_reduce, dist.all_gather = original_reduce, original_gather


def all_gather_varlen(traffic: Traffic | None, message: Tensor, group: Any = None) -> list[Tensor]:
    """Every rank's 1-D ``message`` (lengths may differ), in rank order, exact lengths.

    Two collectives: the lengths (one int32 per rank), then the messages
    padded to the longest one. Both count; so does the padding.
    """
    length = torch.tensor([len(message)], dtype=torch.int32, device=message.device)
    lengths = [int(t) for t in all_gather(traffic, length, group)]
    padded = message.new_zeros(max(lengths))
    padded[: len(message)] = message
    return [m[:n] for m, n in zip(all_gather(traffic, padded, group), lengths, strict=True)]
