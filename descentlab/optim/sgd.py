"""Gradient descent: batch GD, SGD and mini-batch SGD, with momentum or Nesterov."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from descentlab.optim.base import RuleOptimizer
from descentlab.optim.validation import check_nonnegative
from descentlab.rules.sgd import MOMENTUM_FORMS, SGDRule

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
        engine, torch_options: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = SGDRule()

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
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            momentum_form=momentum_form,
        )
        super().__init__(params, defaults, engine=engine, **torch_options)

    @staticmethod
    def check_group(group: dict[str, Any]) -> None:
        """Check lr, momentum, dampening, weight_decay, nesterov and momentum_form."""
        RuleOptimizer.check_group(group)
        momentum = check_nonnegative("momentum", group["momentum"])
        dampening = check_nonnegative("dampening", group["dampening"])
        check_nonnegative("weight_decay", group["weight_decay"])
        form = group["momentum_form"]
        if form not in MOMENTUM_FORMS:
            raise ValueError(f"momentum_form must be one of {MOMENTUM_FORMS}, got {form!r}")
        if form == "averaged":
            if momentum >= 1:
                raise ValueError(f"momentum must be < 1 in the averaged form, got {momentum!r}")
            if dampening != 0:
                raise ValueError(
                    f"dampening must be 0 with momentum_form='averaged' (the form already "
                    f"weights g by 1 - momentum), got {dampening!r}"
                )
        if group["nesterov"] and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "nesterov=True requires momentum > 0 and dampening = 0, got "
                f"momentum={group['momentum']!r}, dampening={group['dampening']!r}"
            )
