"""SOAP (Vyas et al., 2024): Adam in the eigenbasis of Shampoo's preconditioner."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from descentlab.optim.base import RuleOptimizer
from descentlab.rules import get_rule

__all__ = ["SOAP"]


class SOAP(RuleOptimizer):
    r"""SOAP: Adam run in the eigenbasis of Shampoo's Kronecker factors (Vyas et al., 2024).

    For a matrix gradient G, with factors L ← β_s L + (1−β_s) GGᵀ and
    R ← β_s R + (1−β_s) GᵀG and their eigenbases Q_L, Q_R:

        m ← β₁ m + (1 − β₁) G,     v ← β₂ v + (1 − β₂) (Q_Lᵀ G Q_R)²
        θ ← θ − η √(1−β₂ᵏ)/(1−β₁ᵏ) · Q_L [(Q_Lᵀ m Q_R) / (√v + ε)] Q_Rᵀ
        θ ← θ (1 − ηλ)

    with k = t − 1: the first step only builds the bases (the parameter does not
    move), and every ``precondition_frequency`` steps the bases are refreshed by
    one QR power-iteration step. Each dimension of a tensor of any order gets a
    factor unless it exceeds ``max_precondition_dim``; 1-D tensors are updated by
    plain Adam unless ``precondition_1d``. See :mod:`descentlab.rules.soap`.

    Arguments and defaults are ``pytorch_optimizer.SOAP``'s, and float64 runs
    match it to rounding (its numerics are followed, including the QR computed
    in float32). Two differences: the step is counted per parameter (the
    reference counts per group, so a parameter whose first gradient arrives
    late starts there as if it had always been stepped), and ``maximize`` does
    not negate ``param.grad`` in place. ``merge_dims=True`` is refused, at
    construction, for a parameter of 2 to ``max_precondition_dim`` elements
    (the reference fails to reshape it).

    Args:
        lr: η (default 3e-3). betas: (β₁, β₂) (default (0.95, 0.95)).
        shampoo_beta: β_s of the factors (default None: β₂).
        weight_decay: λ, decoupled, applied after the update (default 1e-2).
        precondition_frequency: steps between basis refreshes (default 10).
        max_precondition_dim: larger dimensions are not rotated (default 10000).
        merge_dims: merge small neighbouring dimensions first (default False).
        precondition_1d: rotate 1-D tensors too (default False).
        correct_bias: Adam's bias correction (default True).
        normalize_gradient: divide the update by its RMS (+ε) (default False).
        data_format: ``"channels_first"`` or ``"channels_last"`` (4-D tensors under merge_dims).
        eps: ε (default 1e-8). maximize: maximise instead of minimise.
        engine, torch_options: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("soap")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.95),
        shampoo_beta: float | None = None,
        weight_decay: float = 1e-2,
        precondition_frequency: int = 10,
        max_precondition_dim: int = 10000,
        merge_dims: bool = False,
        precondition_1d: bool = False,
        correct_bias: bool = True,
        normalize_gradient: bool = False,
        data_format: str = "channels_first",
        eps: float = 1e-8,
        maximize: bool = False,
        *,
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        super().__init__(params, locals(), engine=engine, **torch_options)
