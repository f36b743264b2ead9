"""Deep gradient compression (Lin et al. 2018).

Top-k sparsification with four additions that keep accuracy at 0.1% density.
Each rank keeps a momentum ``u`` and an accumulation ``v`` per entry; every step

.. math::

    g &\\leftarrow g \\cdot \\min\\!\\Big(1, \\frac{c / \\sqrt{W}}{\\lVert g \\rVert}\\Big)
        && \\text{local gradient clipping (if } c \\text{ is given)}\\\\
    u &\\leftarrow m\\,u + g && \\text{momentum correction}\\\\
    v &\\leftarrow v + u && \\text{accumulation}\\\\
    S &= \\text{the } \\lceil d_t n \\rceil \\text{ largest } |v_i|
        && \\text{sent (index + value)}\\\\
    v_i &\\leftarrow v_i - \\text{decoded}(v_i),\\ u_i \\leftarrow 0 \\quad (i \\in S)
        && \\text{momentum factor masking}

and the ranks' average of the sent entries is handed to the optimizer.
The clipping threshold is divided by ``√W`` so that the sum of ``W`` clipped
gradients has norm at most ``c``; the norm is the bucket's (each bucket is
clipped by its own norm). The density warms up: ``warmup_steps`` steps are
split equally over the stages ``warmup`` (25%, 6.25%, 1.5625%, 0.4%), then
``density`` (0.1%) holds.

**The optimizer's side of momentum correction.** The momentum lives in the
hook (``u``), before sparsification, so that entries that wait in ``v`` still
gather momentum. The optimizer must therefore apply the received update
*without* momentum of its own: ``torch.optim.SGD(params, lr, momentum=0)``
(or ``descentlab.SGD``). Its ``p ← p − lr · v̄`` is then, at density 1 and
without masking, exactly momentum SGD (``p ← p − lr · u``, ``u ← m u + ḡ``),
which a test checks. :meth:`DGCState.check_optimizer` refuses an optimizer
with momentum. Weight decay is the optimizer's (applied after the exchange,
not momentum-corrected); Nesterov momentum is not provided.

Reference: Y. Lin, S. Han, H. Mao, Y. Wang, W. J. Dally, "Deep gradient
compression: reducing the communication bandwidth for distributed training",
ICLR 2018.
"""

import math
from typing import Any

import torch
import torch.distributed as dist

from descentlab.distributed.sparse import SparseState
from descentlab.distributed.state import check_density, completed
from descentlab.distributed.topk import send_top

__all__ = ["DGCState", "dgc_hook", "WARMUP"]

#: The paper's density warm-up stages (then the final density, 0.1%).
WARMUP: tuple[float, ...] = (0.25, 0.0625, 0.015625, 0.004)


class DGCState(SparseState):
    """State of :func:`dgc_hook`: momentum ``u``, accumulation ``v`` and the step.

    Args:
        density: the density after the warm-up, in (0, 1] (paper: 0.001).
        momentum: ``m`` of the momentum correction, in [0, 1).
        clip_norm: local clipping threshold ``c`` (``None``: no clipping).
        warmup_steps: steps of density warm-up, split equally over ``warmup``
            (``0``: ``density`` from the start). The paper warms up over 4 epochs.
        warmup: the warm-up densities, each in (0, 1].
        momentum_masking: zero ``u`` where entries were sent (the paper's
            momentum factor masking).
        index_coding, value_coding, process_group: see
            :class:`~descentlab.distributed.sparse.SparseState`.
    """

    hook_name = "dgc_hook"
    buffer_names = ("momentum", "accumulation")

    def __init__(
        self,
        density: float = 0.001,
        momentum: float = 0.9,
        clip_norm: float | None = None,
        warmup_steps: int = 0,
        warmup: tuple[float, ...] = WARMUP,
        momentum_masking: bool = True,
        index_coding: str = "rice",
        value_coding: str = "fp16",
        process_group: Any = None,
    ) -> None:
        self.density = check_density("density", density)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not (
            0 <= momentum < 1
        ):
            raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
        if clip_norm is not None and not (
            isinstance(clip_norm, (int, float)) and 0 < clip_norm < math.inf
        ):
            raise ValueError(f"clip_norm must be None or a finite number > 0, got {clip_norm!r}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
        self.warmup = tuple(check_density("warmup density", d) for d in warmup)
        self.momentum = float(momentum)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.warmup_steps = warmup_steps
        self.momentum_masking = bool(momentum_masking)
        super().__init__(index_coding, value_coding, process_group)

    def config(self) -> dict[str, Any]:
        """All settings."""
        return {**super().config(), "density": self.density, "momentum": self.momentum,
                "clip_norm": self.clip_norm, "warmup_steps": self.warmup_steps,
                "warmup": list(self.warmup), "momentum_masking": self.momentum_masking}

    def current_density(self) -> float:
        """The density of the current step (warm-up stage, or the final density)."""
        if self.step < self.warmup_steps and self.warmup:
            stage = self.step * len(self.warmup) // self.warmup_steps
            return max(self.warmup[stage], self.density)
        return self.density

    def check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Raise ``ValueError`` if any parameter group of ``optimizer`` has momentum.

        DGC's momentum is applied in the hook; momentum in the optimizer too
        would apply it twice.
        """
        for i, group in enumerate(optimizer.param_groups):
            for key in ("momentum", "betas"):
                value = group.get(key)
                first = value[0] if isinstance(value, (tuple, list)) else value
                if first:
                    raise ValueError(
                        f"DGC applies momentum in the hook (momentum correction); the "
                        f"optimizer must not: param group {i} has {key}={value!r} "
                        "(use torch.optim.SGD(params, lr, momentum=0))"
                    )


def dgc_hook(state: DGCState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: deep gradient compression (module docstring).

    Register with ``ddp.register_comm_hook(DGCState(density=0.001, warmup_steps=…), dgc_hook)``
    and train with an optimizer without momentum (``SGD(params, lr)``).
    """
    if not isinstance(state, DGCState):
        raise TypeError(f"dgc_hook needs a DGCState, got {type(state).__name__}")
    state.begin(bucket)
    grad = bucket.buffer()
    buffers = state.bucket_buffers(bucket)
    u, v = buffers["momentum"], buffers["accumulation"]
    if state.clip_norm is not None:
        limit = state.clip_norm / math.sqrt(state.world_size)
        norm = float(torch.linalg.vector_norm(grad))
        if norm > limit:
            grad.mul_(limit / norm)
    u.mul_(state.momentum).add_(grad)
    v.add_(u)
    sent = send_top(state, v, state.current_density(), grad)
    if state.momentum_masking:
        u[sent] = 0
    state.end(bucket)
    return completed(grad)


DGCState.hook = staticmethod(dgc_hook)
