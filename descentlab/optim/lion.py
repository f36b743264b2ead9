"""Lion (Chen et al., 2023): sign of an interpolated momentum."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from descentlab.optim.base import RuleOptimizer
from descentlab.rules import get_rule

__all__ = ["Lion"]


class Lion(RuleOptimizer):
    r"""Lion, "EvoLved Sign Momentum": sign of interpolated momentum (Chen et al., 2023).

    With gradient g and momentum m (m₀ = 0):

        θ ← θ (1 − η λ′)                       weight decay, λ′ below
        c = β₁ m + (1 − β₁) g                  interpolation
        θ ← θ − η · sign(c)
        m ← β₂ m + (1 − β₂) g                  momentum, after the step

    Every coordinate moves by exactly ±η (or 0), so η is typically 3–10×
    smaller than AdamW's and λ 3–10× larger (the paper's advice). The state
    is one buffer (m), against Adam's two.

    Weight decay λ′: λ by default (θ ← θ(1 − ηλ), the paper's Algorithm 2
    and lion-pytorch's default); with ``decoupled_weight_decay=True``,
    λ/η₀ where η₀ is ``init_lr``, by default the constructor's ``lr`` for
    every group — so the decay follows η's *schedule* but not its size
    (lion-pytorch's option of the same name, which also uses the
    constructor's lr for every group).

    Reference: ``lion_pytorch.Lion`` (same arguments, defaults lr=1e-4,
    betas=(0.9, 0.99), weight_decay=0); matched to ≤1e-10 relative in
    float64 over 60+ steps under every engine. Where implementations differ:
    lion-pytorch keeps no step counter and ``decoupled_weight_decay`` for the
    whole optimizer (ours is per group, and a step counter is kept for
    torch-style checkpoints); it has no ``maximize``; optax's ``lion`` applies
    the decay as ``θ ← θ − η(sign(c) + λθ)``, the same to first order.
    ``use_triton`` is lion-pytorch's CUDA kernel switch and is accepted and
    ignored (the engine decides how steps run).

    Args:
        lr: η (default 1e-4, > 0). betas: (β₁, β₂) in [0, 1] (default (0.9, 0.99)).
        weight_decay: λ (default 0).
        use_triton: ignored. decoupled_weight_decay: λ′ = λ/η₀ (default False).
        maximize: maximise instead. init_lr: η₀ (default: the constructor's lr).
        cautious: apply ±η only where sign(c) agrees with g, rescaled per tensor
            (Liang et al. 2024; ``pytorch_optimizer.Lion(cautious=True)``'s mask;
            :mod:`descentlab.rules.cautious`; default False).
        state_precision: how m is stored: ``"full"`` (default), ``"bf16"`` or ``"8bit"``
            (:mod:`descentlab.rules.low_precision`).
        engine, torch_options: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("lion")
    ignored_arguments = ("use_triton",)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        use_triton: bool = False,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
        init_lr: float | None = None,
        cautious: bool = False,
        state_precision: str = "full",
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        del use_triton  # a CUDA kernel switch of lion-pytorch; the engine decides
        super().__init__(params, locals(), engine=engine, **torch_options)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; a Lion group without ``init_lr`` takes the constructor's ``lr`` (η₀)."""
        if self.named_rule(param_group) is self.rule and param_group.get(
            "init_lr", self.defaults["init_lr"]
        ) is None:
            param_group = {**param_group, "init_lr": self.defaults["lr"]}
        super().add_param_group(param_group)
