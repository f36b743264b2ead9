"""Gradient descent: batch GD, SGD and mini-batch SGD, with momentum or Nesterov."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from descentlab.optim.base import RuleOptimizer
from descentlab.rules import get_rule

__all__ = ["SGD"]


class SGD(RuleOptimizer):
    r"""Gradient descent with optional momentum, Nesterov momentum and weight decay.

    One class covers **batch gradient descent, SGD and mini-batch SGD**: the
    update is the same, only the gradient differs — it is the gradient of the
    loss on whatever batch the data loader produced (the whole data set for
    batch GD, one example for SGD, a mini-batch otherwise). The batch size is
    the data loader's, not the optimizer's.

    With gradient g (plus λθ under weight decay λ, coupled as L2):

    * plain:      θ ← θ − η g
    * heavy-ball momentum (``momentum_form="heavy_ball"``, torch.optim's form;
      Polyak 1964, Sutskever et al. 2013):
      v₁ = g₁, v ← β v + (1 − τ) g,  θ ← θ − η v
    * averaged momentum (``momentum_form="averaged"``, an exponential average
      of gradients, as in the seed article's v ← βv + (1 − β)∇J):
      v₀ = 0, v ← β v + (1 − β) g,  θ ← θ − η v.
      Its steps are (1 − β) times the heavy-ball ones: scale η by 1/(1 − β) to
      compare. ``dampening`` must be 0 in this form.
    * Nesterov (``nesterov=True``): the step uses the look-ahead
      d = g + β v (heavy-ball) or d = (1 − β) g + β v (averaged), θ ← θ − η d.
      This is the reformulation of Nesterov (1983) that Sutskever et al. (2013)
      and torch.optim use; some texts evaluate the gradient at θ − ηβv instead,
      which gives the same iterates up to a change of variables.

    Args:
        params: parameters or parameter groups.
        lr: learning rate η (default 1e-3, as torch.optim).
        momentum: β (default 0, no momentum).
        dampening: τ for the heavy-ball form (default 0).
        weight_decay: λ, coupled L2 penalty (default 0).
        nesterov: use Nesterov momentum (needs momentum > 0 and dampening 0).
        maximize: maximise the objective instead of minimising it.
        momentum_form: ``"heavy_ball"`` (default) or ``"averaged"``.
        state_precision: how the momentum buffer is stored: ``"full"`` (default),
            ``"bf16"`` or ``"8bit"`` (:mod:`descentlab.rules.low_precision`).
        engine, torch_options: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("sgd")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        momentum_form: str = "heavy_ball",
        state_precision: str = "full",
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        super().__init__(params, locals(), engine=engine, **torch_options)

