"""Learning-rate-free optimizers: Prodigy, DAdaptAdam and DAdaptSGD.

Their arguments, defaults and group keys are those of ``prodigyopt.Prodigy``
and ``dadaptation.DAdaptAdam`` / ``DAdaptSGD``, so code written for those
packages ports by changing the import (float64 parity ≤1e-10 relative, see
the README). The rules are in :mod:`descentlab.rules.lr_free`; the global
reductions run once per step over all parameters (:mod:`descentlab.rules.reduction`).

Differences from the references: gradients are never changed in place
(the references add coupled weight decay to ``p.grad``); ``slice_p`` must
be 1; a first DAdaptSGD gradient of zero norm skips the step instead of
dividing by zero; ``maximize`` and ``engine`` are added.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from descentlab.optim.reduction import GlobalRuleOptimizer
from descentlab.rules import get_rule

__all__ = ["Prodigy", "DAdaptAdam", "DAdaptSGD"]

Betas = tuple[float, float]


class Prodigy(GlobalRuleOptimizer):
    r"""Prodigy: Adam with its step size estimated on the way (Mishchenko & Defazio, 2024).

    With the estimate dₖ (d₀ = ``d0``), η = lr, b = √(1 − β₂ᵏ⁺¹)/(1 − β₁ᵏ⁺¹)
    under ``use_bias_correction`` (else 1) and g the gradient (plus λθ unless
    ``decouple``), step k takes, over every parameter of every group:

        m ← β₁m + dₖ(1 − β₁) g,     v ← β₂v + dₖ²(1 − β₂) g²
        s ← β₃s + (dₖ/d₀)·dₖηb · g              (dₖ/d₀ · dₖ · g with safeguard_warmup)
        rₖ = β₃ rₖ₋₁ + (dₖ/d₀)·dₖηb ⟨g, θ₀ − θ⟩      (summed over all parameters)
        d̂ = d_coef · rₖ / ‖s‖₁,   dₖ₊₁ = min(max(dₖ, d̂)ₘₐₓ, dₖ · growth_rate)
        θ ← θ(1 − λdₖηb) (decouple),   θ ← θ − dₖηb · m/(√v + dₖ₊₁ε)

    (max(dₖ, d̂)ₘₐₓ is the running maximum of the d̂; at the first update d
    jumps to d̂.) β₃ defaults to √β₂. With β₁ = 0 the step uses g in place
    of m, scaled by dₖ₊₁. Groups share one lr (others may use 0: frozen);
    betas, β₃, d_coef, growth_rate, decouple and bias correction are read
    from the first group, weight decay, ε, d0 and safeguard_warmup per group.
    The groups hold ``d``, ``d_max``, ``d_numerator``, ``d_denom``, ``d_hat``
    and ``k`` as in ``prodigyopt``.

    Args:
        lr: multiplier of the estimated step size (default 1.0; leave it).
        betas: (β₁, β₂) (default (0.9, 0.999)). beta3: β₃ (default None: √β₂).
        eps: ε (default 1e-8). weight_decay: λ (default 0).
        decouple: decoupled (AdamW) weight decay (default True).
        use_bias_correction: Adam's bias correction (default False).
        safeguard_warmup: leave lr out of s (for warm-up schedules; default False).
        d0: initial estimate (default 1e-6). d_coef: factor of d̂ (default 1.0).
        growth_rate: largest growth of d per step (default inf).
        fsdp_in_use: all-reduce the sums over torch.distributed's processes.
        slice_p: must be 1 (statistics on every entry).
        maximize: maximise instead. engine: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("prodigy")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        betas: Betas = (0.9, 0.999),
        beta3: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decouple: bool = True,
        use_bias_correction: bool = False,
        safeguard_warmup: bool = False,
        d0: float = 1e-6,
        d_coef: float = 1.0,
        growth_rate: float = math.inf,
        fsdp_in_use: bool = False,
        slice_p: int = 1,
        *,
        maximize: bool = False,
        engine: str = "auto",
    ) -> None:
        super().__init__(params, locals(), engine=engine)


class DAdaptAdam(GlobalRuleOptimizer):
    r"""D-Adaptation Adam: Adam with its step size estimated (Defazio & Mishchenko, 2023).

    With the estimate dₖ (d₀ = ``d0``), η = lr, b as in :class:`Prodigy`,
    λ_eff = ηdₖb, per-group layer scale r (group key ``layer_scale``, 1.0)
    and g the gradient (plus λθ unless ``decouple``):

        nₖ = Σ r λ_eff ⟨g, s/(√v + ε)⟩               (with the old s and v)
        m ← β₁m + rλ_eff(1 − β₁) g,   v ← β₂v + (1 − β₂) g²
        s ← √β₂ s + λ_eff(1 − √β₂) g
        Nₖ = √β₂ Nₖ₋₁ + (1 − √β₂) nₖ,   d̂ = Nₖ / ((1 − √β₂) Σ r‖s‖₁)
        dₖ₊₁ = max(dₖ, min(d̂, dₖ · growth_rate))
        θ ← θ(1 − λλ_eff) (decouple),   θ ← θ − m/(√v + ε)

    (the learning rate is inside m). Groups share one lr (or use 0); betas,
    decouple, bias correction and growth_rate come from the first group.
    The groups hold ``d``, ``k``, ``layer_scale`` and ``numerator_weighted``.

    Args:
        lr: multiplier of the estimated step size (default 1.0).
        betas: (β₁, β₂) (default (0.9, 0.999)). eps: ε (default 1e-8).
        weight_decay: λ (default 0). log_every: log d every k steps (0: never).
        decouple: decoupled weight decay (default False).
        use_bias_correction: Adam's bias correction (default False).
        d0: initial estimate (default 1e-6). growth_rate: largest growth of d per step.
        fsdp_in_use: all-reduce the sums over torch.distributed's processes.
        maximize: maximise instead. engine: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("dadapt_adam")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        betas: Betas = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        log_every: int = 0,
        decouple: bool = False,
        use_bias_correction: bool = False,
        d0: float = 1e-6,
        growth_rate: float = math.inf,
        fsdp_in_use: bool = False,
        *,
        maximize: bool = False,
        engine: str = "auto",
    ) -> None:
        super().__init__(params, locals(), engine=engine)


class DAdaptSGD(GlobalRuleOptimizer):
    r"""D-Adaptation SGD: dual averaging with its step size estimated (Defazio & Mishchenko, 2023).

    With the estimate dₖ, η = lr, the first gradient's norm ‖g₀‖ (over all
    parameters, without weight decay), λₖ = dₖη/‖g₀‖ and g the gradient
    plus λθ (λ of the first group):

        nₖ = nₖ₋₁ + λₖ ⟨g, s⟩,   s ← s + λₖ g
        d̂ = 2nₖ/‖s‖₂,   dₖ₊₁ = max(dₖ, min(d̂, dₖ · growth_rate))
        z = θ₀ − s,   θ ← μθ + (1 − μ)z              (μ = momentum)

    Groups share one lr (or use 0); momentum, weight decay and growth_rate
    come from the first group. The groups hold ``k``, ``d``,
    ``numerator_weighted`` and ``g0_norm``.

    Args:
        lr: multiplier of the estimated step size (default 1.0).
        momentum: μ (default 0). weight_decay: λ (default 0).
        log_every: log d every k steps (0: never). d0: initial estimate (default 1e-6).
        growth_rate: largest growth of d per step (default inf).
        fsdp_in_use: all-reduce the sums over torch.distributed's processes.
        maximize: maximise instead. engine: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("dadapt_sgd")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        log_every: int = 0,
        d0: float = 1e-6,
        growth_rate: float = math.inf,
        fsdp_in_use: bool = False,
        *,
        maximize: bool = False,
        engine: str = "auto",
    ) -> None:
        super().__init__(params, locals(), engine=engine)
