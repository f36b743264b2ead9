"""Threshold quantisation with residuals (Strom 2015): send only what passed τ.

Each rank keeps a residual ``r`` per gradient entry. Every step

.. math::

    r \\leftarrow r + g, \\qquad S = \\{i : |r_i| \\ge τ\\},

and only the entries in ``S`` are sent; what is not sent stays in ``r`` and
keeps accumulating until it passes the threshold.

* ``message="sign"`` (Strom's scheme): entry ``i ∈ S`` is sent as its index
  and one bit, and stands for ``±τ``; the residual keeps the rest,
  ``r_i ← r_i − τ·sign(r_i)`` (an entry far above τ is sent again next step).
* ``message="value"``: entry ``i ∈ S`` is sent as its index and its value
  (``value_coding``, fp16 by default) and ``r_i ← r_i − decoded(r_i)``.

The received entries of all ranks are summed and divided by the world size:
that is the gradient the optimizer sees.

τ is either fixed (``ThresholdState(threshold=τ)``, the same on every rank)
or adapted to hold a target density ``d`` (``ThresholdState(density=d)``):
the first step takes τ as the ranks' mean of the ``⌈d·n⌉``-th largest
``|r_i|`` of the first bucket (one all-reduce of one float); after every step

.. math::

    \\bar K \\leftarrow 0.9\\,\\bar K + 0.1\\,K, \\qquad
    τ \\leftarrow τ \\cdot \\operatorname{clip}\\Big(\\frac{\\bar K}{d\\,N\\,W},
        \\tfrac14, 4\\Big)^{η},

where ``K`` is the number of entries all ranks sent in that step (known to
every rank from the messages), ``K̄`` its running mean (starting at the
target ``d N W``), ``N`` the number of gradient entries, ``W`` the world size
and ``η = adapt_rate`` (0.5). Entries cross τ in bursts (correlated
gradients under momentum); steering by the running mean holds the *average*
density near ``d``, where the step's own count would settle at its median and
overshoot the mean 2–3×. Every rank computes the same τ, so the ``±τ`` of the
sign messages need not be sent. One τ serves the whole model, as in Strom's
paper.

Reference: N. Strom, "Scalable distributed DNN training using commodity GPU
cloud computing", Interspeech 2015.
"""

from typing import Any

import torch
import torch.distributed as dist

from descentlab.distributed.sparse import SparseState, select_count
from descentlab.distributed.state import check_density, completed
from descentlab.distributed.traffic import all_reduce

__all__ = ["ThresholdState", "threshold_hook"]


class ThresholdState(SparseState):
    """State of :func:`threshold_hook`: the residuals, τ and the step.

    Give exactly one of ``threshold`` and ``density``.

    Args:
        threshold: a fixed τ > 0.
        density: the share of entries to send each step, in (0, 1]; τ adapts.
        message: ``"sign"`` (index + 1 bit, standing for ±τ) or ``"value"``
            (index + value).
        adapt_rate: η of the τ update (density mode), in (0, 1].
        index_coding, value_coding, process_group: see
            :class:`~descentlab.distributed.sparse.SparseState` (``value_coding``
            applies to ``message="value"``).
    """

    hook_name = "threshold_hook"
    signs_carry_magnitude = True  # ±τ

    def __init__(
        self,
        threshold: float | None = None,
        density: float | None = None,
        message: str = "sign",
        adapt_rate: float = 0.5,
        index_coding: str = "rice",
        value_coding: str = "fp16",
        process_group: Any = None,
    ) -> None:
        if (threshold is None) == (density is None):
            raise ValueError(
                "ThresholdState needs exactly one of threshold=τ (fixed) and density=d "
                f"(adapted); got threshold={threshold!r}, density={density!r}"
            )
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, (int, float))
            or not threshold > 0 or threshold == float("inf")
        ):
            raise ValueError(f"threshold must be a finite number > 0, got {threshold!r}")
        if message not in ("sign", "value"):
            raise ValueError(f"message must be 'sign' or 'value', got {message!r}")
        if message == "value" and value_coding == "sign":
            raise ValueError("message='value' sends values: value_coding must not be 'sign' "
                             "(message='sign' sends index + sign)")
        self.density = None if density is None else check_density("density", density)
        self.adapt_rate = check_density("adapt_rate", adapt_rate)
        self.message = message
        self.tau: float | None = None if threshold is None else float(threshold)
        self.fixed = threshold is not None
        self.mean_count: float | None = None
        self._sent_this_step = 0
        self._entries_this_step = 0
        super().__init__(index_coding, "sign" if message == "sign" else value_coding,
                         process_group)

    def config(self) -> dict[str, Any]:
        """Threshold or density, message kind, adapt rate and codings."""
        return {**super().config(), "threshold": self.tau if self.fixed else None,
                "density": self.density, "message": self.message, "adapt_rate": self.adapt_rate}

    def extra_state(self) -> dict[str, Any]:
        """τ (the adapted one too) and the smoothed count."""
        return {"tau": self.tau, "mean_count": self.mean_count}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        """Restore τ (a fixed τ stays the one given to the constructor)."""
        if not self.fixed:
            self.tau, self.mean_count = extra["tau"], extra["mean_count"]

    def end_step(self) -> None:
        """Adapt τ to the density target from this step's count (density mode)."""
        if not self.fixed and self.tau is not None and self._entries_this_step:
            assert self.density is not None
            target = self.density * self._entries_this_step * self.world_size
            if self.mean_count is None:
                self.mean_count = target
            self.mean_count = 0.9 * self.mean_count + 0.1 * self._sent_this_step
            ratio = self.mean_count / target
            self.tau *= min(4.0, max(0.25, ratio)) ** self.adapt_rate
        self._sent_this_step = self._entries_this_step = 0


def _initial_tau(state: ThresholdState, magnitude: torch.Tensor) -> float:
    assert state.density is not None
    k = select_count(state.density, len(magnitude))
    local = torch.topk(magnitude, k, sorted=False).values.min().reshape(1).to(torch.float64)
    all_reduce(state.traffic, local, state.process_group)
    tau = float(local) / state.world_size
    return tau if tau > 0 else float(torch.finfo(torch.float32).tiny)


def threshold_hook(
    state: ThresholdState, bucket: dist.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: Strom's thresholded exchange with residuals (module docstring).

    Register with ``ddp.register_comm_hook(ThresholdState(density=0.01), threshold_hook)``.
    """
    if not isinstance(state, ThresholdState):
        raise TypeError(f"threshold_hook needs a ThresholdState, got {type(state).__name__}")
    state.begin(bucket)
    grad = bucket.buffer()
    residual = state.bucket_buffers(bucket)["residual"]
    residual.add_(grad)
    magnitude = residual.abs()
    if state.tau is None:
        state.tau = _initial_tau(state, magnitude)
    indices = torch.nonzero(magnitude >= state.tau).reshape(-1)
    chosen = residual[indices]
    received = state.exchange(indices, chosen, len(grad), same_count=False)
    if state.message == "sign":
        residual[indices] -= chosen.sign() * state.tau  # |r_i| >= τ > 0: never sign 0
        out = state.average(received, grad, scale=state.tau)
    else:
        residual[indices] -= received[state.rank][1].to(residual.dtype)
        out = state.average(received, grad)
    state._sent_this_step += sum(len(i) for i, _ in received)
    state._entries_this_step += len(grad)
    state.end(bucket)
    return completed(out)


ThresholdState.hook = staticmethod(threshold_hook)
