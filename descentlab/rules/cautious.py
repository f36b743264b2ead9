"""The cautious mask (Liang et al. 2024, "Cautious Optimizers"), and the flag that adds it.

A cautious optimizer applies its update u only where u agrees in sign with
the gradient g, and rescales what it keeps so the step keeps its size:

    mask = 1[u ⊙ g > 0],    u ← u ⊙ mask · n / (Σ mask + 1)        (n entries of *one* tensor)

The rescaling is ``pytorch_optimizer``'s (``BaseOptimizer.apply_cautious``);
the paper's code divides by ``mean(mask) + ε`` instead, the same up to the
``+1`` in the count. The sum runs over one parameter, so a rule with the
mask is not elementwise: on a flat run of several parameters it would count
the entries of the neighbours.

**The flag on elementwise rules.** Adam, AdamW, NAdam, RAdam, Adamax and
Lion declare :data:`CAUTIOUS` (``cautious=False`` by default) and split their
update into :meth:`DirectionRule.step_direction`: weight decay, the state
update, and the step u they subtract (``update`` is ``θ ← θ − u``, the same
operations as before, so with the flag off nothing changes, bit for bit,
and the elementwise engines and torch's fused kernels run as they did). For
a group with ``cautious=True`` the optimizer shell steps the group with
:func:`with_cautious` of its rule, a :class:`CautiousRule` (a
:class:`~descentlab.rules.base.TensorRule`: each parameter whole, never in
a fused or flat elementwise kernel) that applies the mask to u. The mask
compares u with the gradient the rule's moments see (coupled weight decay
included; a decoupled decay θ ← θ(1 − ηλ) is applied to θ and is not masked).

Tensor rules that offer the mask themselves (ADOPT, AdEMAMix, MARS) call
:func:`cautious` where their reference applies it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from torch import Tensor

from descentlab.rules.base import (
    ELEMENTWISE,
    STRUCTURAL,
    Flags,
    HParam,
    Rule,
    Scalar,
    WrappedRule,
    unsupported_option,
)

__all__ = ["CAUTIOUS", "cautious", "DirectionRule", "CautiousRule", "with_cautious",
           "declares_cautious"]

#: The declaration of the flag (a structural hyperparameter: it chooses the rule's kind).
CAUTIOUS = HParam("cautious", False, STRUCTURAL, doc="update only where it agrees with g")


def cautious(update: Tensor, grad: Tensor) -> Tensor:
    """The update where it agrees in sign with the gradient, rescaled by n/(kept + 1); else 0."""
    mask = (update * grad > 0).to(grad.dtype)
    mask.mul_(mask.numel() / (mask.sum() + 1))
    return update * mask


def declares_cautious(rule: Rule) -> bool:
    """Whether ``rule`` offers ``cautious`` (declares :data:`CAUTIOUS`)."""
    return any(hp.name == CAUTIOUS.name for hp in rule.hparams)


class DirectionRule(Rule):
    """An elementwise rule whose update is θ ← θ − u, with u from :meth:`step_direction`.

    The split lets :class:`CautiousRule` mask u; ``update`` itself is the
    plain step.
    """

    def step_direction(
        self, param: Tensor, grad: Tensor, state: dict[str, Tensor], h: Mapping[str, Scalar],
        step: Scalar, flags: Flags,
    ) -> tuple[Tensor, Tensor]:
        """Apply weight decay and update the state; return (g, u): the gradient the rule used
        (coupled decay included) and the step to subtract from θ."""
        raise NotImplementedError

    def update(self, param, grad, state, h, step, flags) -> None:
        """θ ← θ − u (see :meth:`step_direction`)."""
        param.sub_(self.step_direction(param, grad, state, h, step, flags)[1])


class CautiousRule(WrappedRule):
    """An elementwise :class:`DirectionRule` with the cautious mask on its step, per parameter.

    Declarations, checks, flags, scalars and state are the wrapped rule's;
    only the step changes: θ ← θ − cautious(u, g).
    """

    def check_sparse(self, flags: Flags) -> None:
        """Sparse gradients are refused (the mask's count is over a dense tensor)."""
        raise RuntimeError(
            f"{self.name} with cautious=True does not support sparse gradients; use "
            "cautious=False for the sparse parameters' group"
        )

    def update(self, param, grad, state, h, step, flags) -> None:
        """θ ← θ − cautious(u, g), with (g, u) from the wrapped rule's ``step_direction``."""
        g, u = self.inner.step_direction(param, grad, state, h, step, flags)
        param.sub_(cautious(u, g))


@functools.cache
def with_cautious(rule: Rule) -> Rule:
    """The rule a ``cautious=True`` group steps with: ``rule`` with the mask on its step.

    A tensor rule that declares the flag applies the mask itself and is
    returned as it is; an elementwise rule must be a :class:`DirectionRule`
    declaring :data:`CAUTIOUS`.
    """
    if rule.kind != ELEMENTWISE and declares_cautious(rule):
        return rule
    if not (isinstance(rule, DirectionRule) and declares_cautious(rule)):
        raise unsupported_option(rule, "cautious=True", CAUTIOUS)
    return CautiousRule(rule)
