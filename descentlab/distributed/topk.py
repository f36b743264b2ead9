"""Top-k sparsification with error feedback.

Each rank keeps a residual ``r`` per gradient entry; every step

.. math::

    r \\leftarrow r + g, \\qquad S = \\text{the } k = \\lceil d\\,n \\rceil
    \\text{ entries of largest } |r_i|,

sends the entries of ``S`` (index + value, ``value_coding``) and keeps the
rest, and what the coding lost, in the residual:
``r_i ← r_i − decoded(r_i)`` for ``i ∈ S``. The average of all ranks'
entries is the gradient the optimizer sees. ``k`` is per bucket of ``n``
entries, the same on every rank, so with fixed-width indices (``"bits"``,
``"int32"``) one all-gather suffices.

References: S. U. Stich, J.-B. Cordonnier, M. Jaggi, "Sparsified SGD with
memory", NeurIPS 2018; D. Alistarh et al., "The convergence of sparsified
gradient methods", NeurIPS 2018.
"""

from typing import Any

import torch
import torch.distributed as dist

from descentlab.distributed.sparse import SparseState, select_count
from descentlab.distributed.state import check_density, completed

__all__ = ["TopKState", "topk_hook", "send_top"]


def _top_indices(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted indices of the ``k`` largest entries of ``magnitude`` (ties: torch.topk's choice)."""
    return torch.topk(magnitude, k, sorted=False).indices.sort().values


class TopKState(SparseState):
    """State of :func:`topk_hook`: the residuals and the step.

    Args:
        density: share of each bucket's entries sent per step, in (0, 1].
        index_coding, value_coding, process_group: see
            :class:`~descentlab.distributed.sparse.SparseState`.
    """

    hook_name = "topk_hook"

    def __init__(
        self,
        density: float = 0.01,
        index_coding: str = "rice",
        value_coding: str = "fp16",
        process_group: Any = None,
    ) -> None:
        self.density = check_density("density", density)
        super().__init__(index_coding, value_coding, process_group)

    def config(self) -> dict[str, Any]:
        """Density and codings."""
        return {**super().config(), "density": self.density}


def send_top(state: SparseState, vector: torch.Tensor, density: float, out: torch.Tensor
             ) -> torch.Tensor:
    """Send the top ``⌈density·n⌉`` entries of ``vector``, subtract what was sent from it
    (error feedback), and write the ranks' average into ``out``; return the sent indices."""
    indices = _top_indices(vector.abs(), select_count(density, len(vector)))
    received = state.exchange(indices, vector[indices], len(vector), same_count=True)
    vector[indices] -= received[state.rank][1].to(vector.dtype)
    state.average(received, out)
    return indices


def topk_hook(state: TopKState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: top-k with error feedback (module docstring).

    Register with ``ddp.register_comm_hook(TopKState(density=0.01), topk_hook)``.
    """
    if not isinstance(state, TopKState):
        raise TypeError(f"topk_hook needs a TopKState, got {type(state).__name__}")
    state.begin(bucket)
    grad = bucket.buffer()
    residual = state.bucket_buffers(bucket)["residual"]
    residual.add_(grad)
    send_top(state, residual, state.density, grad)
    state.end(bucket)
    return completed(grad)


TopKState.hook = staticmethod(topk_hook)
