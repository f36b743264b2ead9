"""LARS and LAMB (You et al. 2017, 2019): steps per tensor scaled by a trust ratio."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from descentlab.optim.base import RuleOptimizer
from descentlab.rules import get_rule
from descentlab.rules.trust_ratio import GRAD_SCALE_KEY

__all__ = ["LARS", "LAMB"]


class LARS(RuleOptimizer):
    r"""LARS, layer-wise adaptive rate scaling (You, Gitman & Ginsburg, 2017).

    For each parameter tensor with two or more dimensions (a weight matrix
    or kernel), with gradient g:

        r = κ ‖θ‖ / (‖g‖ + λ‖θ‖)     (r = 1 if ‖θ‖ = 0 or the denominator is 0)
        u = r (g + λθ)

    and u = g for vectors and scalars (biases, norm scales: no decay, no
    ratio). Then momentum SGD on u (buffer b₀ = 0):

        b ← β b + (1 − τ) u;   d = u + β b (Nesterov) or d = b;   θ ← θ − η d

    Reference: ``pytorch_optimizer.LARS`` (same arguments and defaults:
    lr=1e-3, weight_decay=0, momentum=0.9, dampening=0, trust_coefficient
    κ=1e-3, nesterov=False), matched to ≤1e-10 relative in float64 over 60+
    steps under every engine. Where the reference and the paper disagree:

    * the paper scales every layer; the reference (as SimCLR/BYOL practice)
      excludes tensors with fewer than two dimensions from both the ratio and
      the weight decay — so ``weight_decay`` never touches biases here;
    * the paper's local LR is η·κ‖θ‖/(‖g‖ + λ‖θ‖) applied to the momentum
      *update* (b ← βb + η_local(g + λθ)); the reference (and ours) scales the
      gradient before the momentum, so the scale enters the buffer;
    * the buffer starts at 0 and takes (1 − τ)u from the first step (torch's
      SGD starts it at g); the reference writes the step into ``p.grad``,
      ours leaves gradients alone.

    Args:
        lr: η. weight_decay: λ. momentum: β in [0, 1]. dampening: τ in [0, 1].
        trust_coefficient: κ. nesterov: Nesterov momentum. maximize: maximise.
        engine, torch_options: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("lars")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        dampening: float = 0.0,
        trust_coefficient: float = 1e-3,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        super().__init__(params, locals(), engine=engine, **torch_options)


class LAMB(RuleOptimizer):
    r"""LAMB, layer-wise adaptive moments for large batches (You et al., ICLR 2020).

    Per parameter tensor, with gradient g and step t:

        m ← β₁ m + (1 − β₁) g          (``grad_averaging=False``: m ← β₁ m + g)
        v ← β₂ v + (1 − β₂) g²
        θ ← θ (1 − ηλ)                 (decoupled decay, default; ``fixed_decay``: θ(1 − λ))
        u = m / (√v + ε)               (coupled decay: u ← u + λθ)
        r = min(‖θ‖, 10) / (‖u‖ + ε)   (r = 1 if either norm is 0, or with ``adam=True``)
        θ ← θ − η/(1 − β₁ᵗ) · r u

    ``rectify=True`` uses RAdam's rectified step (factor rₜ once ρₜ ≥
    ``n_sma_threshold``; before that momentum steps η m/(1 − β₁ᵗ) with
    ``degenerated_to_sgd``, or none). ``pre_norm=True`` first rescales every
    gradient by min(1, ``max_grad_norm``/(‖g‖ + ε)) with ‖g‖ the global norm
    over all groups (computed in float32, as the reference; the constructor's
    ``max_grad_norm`` and ``eps``).

    Reference: ``pytorch_optimizer.Lamb`` (same arguments and defaults),
    matched to ≤1e-10 relative in float64 over 60+ steps under every engine.
    Where the reference and the paper disagree:

    * **bias correction**: the paper (v3 on) corrects both moments,
      u = m̂/(√v̂ + ε); the reference corrects only m (the 1/(1 − β₁ᵗ) in the
      step size) and never v, so its early steps differ (its docstring says
      "without bias correction");
    * **trust-ratio clipping**: the paper's φ(‖θ‖) is a scaling function with
      bounds left open; the reference clips ‖θ‖ to [0, 10] (as NVIDIA's
      implementation) and adds ε to ‖u‖; the ratio is not clipped;
    * **weight decay** is decoupled by default (the paper adds λθ to u,
      i.e. ``weight_decouple=False``) and applied to *every* tensor: the
      paper and most recipes exclude biases and norms — pass them in a group
      with ``weight_decay=0`` (see :func:`descentlab.weight_decay_param_groups`);
    * with ``rectify=True`` the reference measures ‖θ − η rₜ u‖ (the stepped
      parameter) in the ratio instead of the step, and ignores coupled decay;
      ours does the same, to match;
    * the step counter is per group in the reference and per parameter here
      (torch's layout); they differ only if some parameter skips steps.
      ``degenerated_to_sgd``, ``n_sma_threshold`` and ``pre_norm`` are
      optimizer-wide in the reference, group keys here (``pre_norm`` is read
      from the constructor's values); the reference's per-parameter
      diagnostics ``weight_norm``, ``adam_norm``, ``trust_ratio`` are not kept.

    Args:
        lr: η. betas: (β₁, β₂). weight_decay: λ. weight_decouple, fixed_decay,
        rectify, degenerated_to_sgd, n_sma_threshold, grad_averaging,
        max_grad_norm, adam, pre_norm, eps: as above. maximize: maximise.
        engine, torch_options: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("lamb")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
        rectify: bool = False,
        degenerated_to_sgd: bool = False,
        n_sma_threshold: int = 5,
        grad_averaging: bool = True,
        max_grad_norm: float = 1.0,
        adam: bool = False,
        pre_norm: bool = False,
        eps: float = 1e-6,
        *,
        maximize: bool = False,
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        super().__init__(params, locals(), engine=engine, **torch_options)

    def _pre_norm_scale(self) -> float:
        """min(1, max_grad_norm/(‖g‖ + ε)) over every gradient, in float32 as the reference."""
        max_norm, eps = float(self.defaults["max_grad_norm"]), float(self.defaults["eps"])
        if max_norm == 0.0:
            return 1.0
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return 1.0
        squares = torch.stack([g.norm() for g in grads]).float().square_().sum()
        return float(torch.clamp(max_norm / squares.sqrt_().add_(eps), max=1.0))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step (see :meth:`RuleOptimizer.step`), after the global rescaling of ``pre_norm``."""
        if not self.defaults["pre_norm"]:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        scale = self._pre_norm_scale()
        for group in self.param_groups:
            group[GRAD_SCALE_KEY] = scale
        try:
            super().step()
        finally:
            for group in self.param_groups:
                group.pop(GRAD_SCALE_KEY, None)
        return loss
