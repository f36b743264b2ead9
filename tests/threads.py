"""Thread counts in tests: one torch thread for a test (small products on a shared machine wait
seconds for a second one; the engines' own context manager), or a given count for a while."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from descentlab.engine.whole import one_thread

__all__ = ["one_thread", "stepped_on", "torch_threads"]


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch on ``count`` threads inside the block, the previous count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def stepped_on(threads: int, opt: torch.optim.Optimizer, params: list[torch.Tensor],
               steps: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """``steps`` steps of ``opt`` on ``threads`` torch threads, with gradients drawn from seeds
    10, 11, ... (scaled by 0.1); the parameters after them."""
    with torch_threads(threads):
        for t in range(steps):
            g = torch.Generator().manual_seed(10 + t)
            for p in params:
                p.grad = torch.randn(p.shape, generator=g, dtype=dtype) * 0.1
            opt.step()
    return [p.detach().clone() for p in params]
