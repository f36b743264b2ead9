"""The Adam family: Adam, AdamW, NAdam, RAdam, Adamax and SparseAdam."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from descentlab.optim.base import RuleOptimizer
from descentlab.rules import get_rule
from descentlab.validation import check_params

__all__ = ["Adam", "AdamW", "NAdam", "RAdam", "Adamax", "SparseAdam"]

Betas = tuple[float, float]



class Adam(RuleOptimizer):
    r"""Adam (Kingma & Ba, 2015) and AMSGrad (Reddi, Kale & Kumar, 2018).

    With step t = 1, 2, … and gradient g:

        weight decay (coupled, default):  g ← g + λθ
        weight decay (decoupled):         θ ← θ(1 − ηλ)          (this is AdamW)
        m ← β₁ m + (1 − β₁) g
        v ← β₂ v + (1 − β₂) g²
        AMSGrad:                          v̄ ← max(v̄, v), and v̄ replaces v below
        θ ← θ − η/(1 − β₁ᵗ) · m / (√v/√(1 − β₂ᵗ) + ε)

    ε is added *outside* the square root and *after* the bias correction of v,
    as in torch.optim and optax. The paper's pseudo-code is the same; its
    "efficient" version (and TensorFlow's Keras before 2.11) adds ε before
    the correction, i.e. ε̂ = ε·√(1 − β₂ᵗ), which matters only early on.

    Weight decay: ``weight_decay`` with the default coupled form is an L2
    penalty whose gradient is then rescaled by the adaptive denominator;
    Loshchilov & Hutter (2019) showed that decays differently from the
    decoupled form. Use :class:`AdamW` (or ``decoupled_weight_decay=True``)
    for the decoupled form.

    Args:
        lr: η (default 1e-3). betas: (β₁, β₂) (default (0.9, 0.999)).
        eps: ε (default 1e-8). weight_decay: λ (default 0).
        amsgrad: use AMSGrad's running maximum of v (default False).
        maximize: maximise instead of minimise.
        decoupled_weight_decay: decay θ directly (AdamW) instead of adding λθ to g.
        cautious: apply the step only where it agrees in sign with the gradient,
            rescaled per tensor (Liang et al. 2024; :mod:`descentlab.rules.cautious`;
            default False: torch.optim's update, bit for bit).
        state_precision: how m and v are stored: ``"full"`` (default, the
            parameter's dtype, as torch.optim), ``"bf16"`` or ``"8bit"``
            (:mod:`descentlab.rules.low_precision`).
        engine, torch_options: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("adam")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: Betas = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
        cautious: bool = False,
        state_precision: str = "full",
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        super().__init__(params, locals(), engine=engine, **torch_options)



class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    The same update as :class:`Adam` but with θ ← θ(1 − ηλ) applied before
    the moment update, instead of adding λθ to the gradient. Note that the
    decay is multiplied by the learning rate η (torch.optim, optax and Keras
    agree; the paper's schedule multiplier η_t scales both terms).

    Args:
        lr: η (default 1e-3). betas: (β₁, β₂) (default (0.9, 0.999)).
        eps: ε (default 1e-8). weight_decay: λ (default 1e-2).
        amsgrad: AMSGrad variant (default False). maximize: maximise instead.
        cautious: the cautious mask, as for :class:`Adam` (default False).
        state_precision: ``"full"`` (default), ``"bf16"`` or ``"8bit"``, as for :class:`Adam`.
        engine, torch_options: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("adamw")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: Betas = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        cautious: bool = False,
        state_precision: str = "full",
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=True,
            cautious=cautious,
            state_precision=state_precision,
            engine=engine,
            **torch_options,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        """As torch.optim.AdamW: after unpickling or ``load_state_dict`` every Adam-family
        group decays decoupled, even one loaded from an ``Adam`` checkpoint that said
        ``decoupled_weight_decay=False``."""
        super().__setstate__(state)
        for group in self.param_groups:
            if "decoupled_weight_decay" in self.named_rule(group).defaults():
                group["decoupled_weight_decay"] = True


class NAdam(RuleOptimizer):
    r"""NAdam: Adam with Nesterov momentum (Dozat, 2016).

    With the momentum schedule μₜ = β₁(1 − ½·0.96^(tψ)) (ψ = momentum_decay)
    and Πₜ = μ₁⋯μₜ:

        m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²
        d = √(v / (1 − β₂ᵗ)) + ε
        θ ← θ − η (1 − μₜ)/(1 − Πₜ) · g/d − η μₜ₊₁/(1 − Πₜ μₜ₊₁) · m/d

    This is torch.optim's form (Dozat's schedule). Keras' Nadam uses the same
    schedule; optax's ``nadam`` instead applies a constant β₁ (Nesterov
    look-ahead on Adam without the schedule), so results differ from ours.
    Weight decay is coupled unless ``decoupled_weight_decay=True`` (NAdamW).

    Args:
        lr: η (default 2e-3). betas: (β₁, β₂) (default (0.9, 0.999)).
        eps: ε (default 1e-8). weight_decay: λ (default 0).
        momentum_decay: ψ (default 4e-3).
        decoupled_weight_decay: decay θ directly instead of adding λθ to g.
        cautious: the cautious mask, as for :class:`Adam` (default False).
        state_precision: ``"full"`` (default), ``"bf16"`` or ``"8bit"``, as for :class:`Adam`.
        maximize: maximise instead. engine, torch_options: see :class:`RuleOptimizer`.
    """

    rule = get_rule("nadam")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 2e-3,
        betas: Betas = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
        cautious: bool = False,
        state_precision: str = "full",
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        super().__init__(params, locals(), engine=engine, **torch_options)



class RAdam(RuleOptimizer):
    r"""RAdam: rectified Adam (Liu et al., 2020).

    With ρ∞ = 2/(1 − β₂) − 1 and ρₜ = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ):

        m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²,   m̂ = m/(1 − β₁ᵗ)
        if ρₜ > 5:  rₜ = √((ρₜ − 4)(ρₜ − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρₜ))
                    θ ← θ − η m̂ · rₜ √(1 − β₂ᵗ) / (√v + ε)
        else:       θ ← θ − η m̂                       (SGD with momentum)

    The threshold 5 is torch.optim's and the paper's released code's (the
    paper's Algorithm 2 says 4). ε is added to √v before the bias
    correction is applied, as in torch.optim.

    Args:
        lr: η (default 1e-3). betas: (β₁, β₂) (default (0.9, 0.999)).
        eps: ε (default 1e-8). weight_decay: λ (default 0).
        decoupled_weight_decay: decay θ directly instead of adding λθ to g.
        cautious: the cautious mask, as for :class:`Adam` (default False).
        state_precision: ``"full"`` (default), ``"bf16"`` or ``"8bit"``, as for :class:`Adam`.
        maximize: maximise instead. engine, torch_options: see :class:`RuleOptimizer`.
    """

    rule = get_rule("radam")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: Betas = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
        cautious: bool = False,
        state_precision: str = "full",
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        super().__init__(params, locals(), engine=engine, **torch_options)



class Adamax(RuleOptimizer):
    r"""Adamax: Adam in the infinity norm (Kingma & Ba, 2015, section 7.1).

        m ← β₁ m + (1 − β₁) g
        u ← max(β₂ u, |g| + ε)
        θ ← θ − η/(1 − β₁ᵗ) · m / u

    ε sits inside the maximum, as in torch.optim; the paper has no ε and
    optax adds it to u outside the maximum.

    Args:
        lr: η (default 2e-3). betas: (β₁, β₂) (default (0.9, 0.999)).
        eps: ε (default 1e-8). weight_decay: λ, coupled (default 0).
        cautious: the cautious mask, as for :class:`Adam` (default False).
        maximize: maximise instead. engine, torch_options: see :class:`RuleOptimizer`.
    """

    rule = get_rule("adamax")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 2e-3,
        betas: Betas = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        cautious: bool = False,
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        super().__init__(params, locals(), engine=engine, **torch_options)



class SparseAdam(RuleOptimizer):
    r"""SparseAdam: Adam for sparse gradients, such as those of ``nn.Embedding(sparse=True)``.

    A masked Adam (torch.optim.SparseAdam's): only the entries a gradient
    holds, and their moments, are updated; see
    :class:`~descentlab.rules.adam.SparseAdamRule` for the equations. The
    parameters must be dense and real, the gradients sparse (a dense
    gradient is refused: use :class:`Adam`). It has torch's arguments and
    state dict (``step`` as a Python int, ``exp_avg``, ``exp_avg_sq``), so
    checkpoints move both ways; in memory the step is a tensor, as for every
    descentlab optimizer.

    Args:
        lr: η (default 1e-3). betas: (β₁, β₂) (default (0.9, 0.999)).
        eps: ε (default 1e-8). maximize: maximise instead.
        engine: as for :class:`RuleOptimizer`; the default ``"reference"`` steps
            each tensor in place (sparse updates gain nothing from flat buffers).
    """

    rule = get_rule("sparse_adam")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: Betas = (0.9, 0.999),
        eps: float = 1e-8,
        maximize: bool = False,
        *,
        engine: str = "reference",
    ) -> None:
        super().__init__(params, locals(), engine=engine)


    def state_dict(self) -> dict[str, Any]:
        """The state dict in torch.optim.SparseAdam's layout, whose ``step`` is a Python int.

        (torch computes its bias corrections from the loaded step: a float32
        tensor there would round them to float32.)
        """
        saved = super().state_dict()
        saved["state"] = {
            key: {**value, "step": int(value["step"])}
            if isinstance(value, dict) and "step" in value
            else value
            for key, value in saved["state"].items()
        }
        return saved

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group after checking that its parameters are dense and real, as torch does."""
        entries = check_params([param_group])[0]["params"]
        tensors = [p[1] if isinstance(p, tuple) else p for p in entries]
        which = len(getattr(self, "param_groups", []))
        sparse = [i for i, p in enumerate(tensors) if p.is_sparse]
        if sparse:
            raise ValueError(
                f"params {sparse} of group {which} are sparse: SparseAdam requires dense "
                "parameter tensors"
            )
        complex_params = [i for i, p in enumerate(tensors) if p.is_complex()]
        if complex_params:
            raise ValueError(
                f"params {complex_params} of group {which} are complex: SparseAdam does not "
                "support complex parameters"
            )
        super().add_param_group({**param_group, "params": entries})
