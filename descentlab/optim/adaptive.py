"""Adagrad, RMSprop and Adadelta: per-coordinate step sizes from squared gradients."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from descentlab.optim.base import RuleOptimizer
from descentlab.rules import get_rule

__all__ = ["Adagrad", "RMSprop", "Adadelta"]


class Adagrad(RuleOptimizer):
    r"""Adagrad (Duchi, Hazan & Singer, 2011).

    With g ← g + λθ (coupled weight decay λ) and step t = 1, 2, …:

        s ← s + g²                                   (s₀ = initial_accumulator_value)
        η_t = η / (1 + (t − 1) · lr_decay)
        θ ← θ − η_t · g / (√s + ε)

    ε is added *outside* the square root, as in torch.optim and optax
    (Keras adds it outside too; some texts write √(s + ε)). Each parameter
    group's own ``initial_accumulator_value`` is honoured (torch.optim uses
    the constructor's value for every group), and state is created lazily at
    a parameter's first step.

    Args:
        lr: η (default 1e-2). lr_decay: time-based decay of η (default 0).
        weight_decay: λ (default 0). initial_accumulator_value: s₀ (default 0).
        eps: ε (default 1e-10). maximize: maximise instead of minimise.
        engine, torch_options: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("adagrad")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        super().__init__(params, locals(), engine=engine, **torch_options)



class RMSprop(RuleOptimizer):
    r"""RMSprop (Hinton, Lecture 6e of "Neural Networks for Machine Learning", 2012).

    With g ← g + λθ (coupled weight decay):

        s ← α s + (1 − α) g²
        centered (Graves 2013):  m ← α m + (1 − α) g,   s̃ = s − m²;  else s̃ = s
        without momentum:        θ ← θ − η g / (√s̃ + ε)
        with momentum μ:         b ← μ b + g / (√s̃ + ε),  θ ← θ − η b

    Conventions differ: torch.optim (and we) add ε outside the square root;
    TensorFlow/Keras add it inside (√(s + ε)) and default ε to 1e-7; the
    lecture used α = 0.9 where torch's default is 0.99.

    Args:
        lr: η (default 1e-2). alpha: α (default 0.99). eps: ε (default 1e-8).
        weight_decay: λ (default 0). momentum: μ (default 0).
        centered: subtract the squared mean gradient (default False).
        maximize: maximise instead of minimise.
        engine, torch_options: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("rmsprop")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        super().__init__(params, locals(), engine=engine, **torch_options)



class Adadelta(RuleOptimizer):
    r"""Adadelta (Zeiler, 2012).

    With g ← g + λθ (coupled weight decay):

        s ← ρ s + (1 − ρ) g²
        Δ = √(u + ε) / √(s + ε) · g
        u ← ρ u + (1 − ρ) Δ²
        θ ← θ − η Δ

    Zeiler's method has no learning rate (η = 1, torch's default); ε sits
    *inside* both square roots, in every common library.

    Args:
        lr: η, a multiplier on the step (default 1.0). rho: ρ (default 0.9).
        eps: ε (default 1e-6). weight_decay: λ (default 0).
        maximize: maximise instead of minimise.
        engine, torch_options: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("adadelta")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        super().__init__(params, locals(), engine=engine, **torch_options)

