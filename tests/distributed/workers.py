"""Module-level functions the launcher tests run in their ranks."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist


def sum_of_ranks(rank: int, world: int, scale: float) -> tuple[int, float, str]:
    """All-reduce ``rank · scale``; return this rank, the sum and the backend."""
    t = torch.tensor([rank * scale])
    dist.all_reduce(t)
    return rank, float(t), dist.get_backend()


def fail_on_rank_one(rank: int, world: int) -> int:
    """Rank 1 raises; the others return."""
    if rank == 1:
        raise ArithmeticError("rank one fails on purpose")
    return rank


def sleep_forever(rank: int, world: int) -> None:
    """Never returns in time."""
    time.sleep(3600)
