"""The engine contract: what an engine does, and the one description of a run it is handed.

An *engine* runs an optimizer's rules over its parameters. The optimizer
shell (:class:`~descentlab.optim.base.RuleOptimizer`) calls three methods:

``prepare(optimizer)``
    when the optimizer is built, after ``add_param_group`` and after
    unpickling: lay out every group (the flat engines move parameters into
    contiguous buffers now, so aliases taken later stay live).
``step_group(optimizer, group)``
    one step of every parameter of ``group`` that has a gradient, with the
    group's rule (:meth:`RuleOptimizer.rule_for`): negate the gradient under
    ``maximize``, create state lazily (the step counter as torch's float32
    CPU tensor, plus ``rule.init_state``), advance the counter and update.
    A parameter without a gradient is not touched and its counter stays.
``state_loaded(optimizer)``
    after ``load_state_dict``: adopt what ``optimizer.state`` now holds.
``state_runs(optimizer, group)``
    outside a step: the parameters of ``group`` that have state, with their
    state entries shaped like them, as 1-D runs over the same coordinates
    (whole flat buffers where the layout allows, else per tensor), for an
    elementwise pass such as Schedule-Free's ``train()``/``eval()``.
``pieces(optimizer, group)``
    for a *global* rule (:mod:`descentlab.rules.reduction`), instead of
    ``step_group``: gather the gradients, create state lazily and advance
    the counters of ``group``'s parameters that have a gradient, and return
    them as :class:`~descentlab.rules.reduction.Piece` s (runs of flat
    buffers, or tensors) for the rule's one ``step_all`` over every group.

What a rule gets depends on its kind (:mod:`descentlab.rules.base`):

* an **elementwise** rule may be handed any 1-D run of coordinates — one
  tensor (reference engine), a chunk of a flat buffer spanning several
  parameters (flat engine), or buffers inside one compiled kernel (compiled
  engine), with scalars as floats or 0-dim tensors;
* a **tensor** rule is always handed whole parameters in their own shape —
  one at a time, or (``batched``) a ``[B, *shape]`` stack of same-shape
  parameters with the same step count — with Python floats and a Python int
  step, under every engine. No engine compiles a tensor rule;
* a **global** rule gets every group's pieces at once, once per step
  (``pieces``), and is never compiled.

Every engine must give the reference engine's results (bitwise for the eager
ones; to rounding for compiled kernels and for global rules, whose sums run
in another order). :class:`Run` is the frozen
description of one call: everything about it except the tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

from descentlab.rules.base import Rule

__all__ = ["Engine", "Run", "describe"]


@dataclasses.dataclass(frozen=True)
class Run:
    """Everything about one rule call except its tensors.

    Attributes:
        rule: the group's rule.
        flags: the rule's structural options for the group (``rule.flags``).
        h: its scalar hyperparameters as floats (``rule.scalars``).
        maximize: whether the gradient is negated first.
        step: the 1-based step number of the parameters updated (0 before any).
    """

    rule: Rule
    flags: Mapping[str, Any]
    h: Mapping[str, float]
    maximize: bool
    step: int = 0

    def at(self, step: int) -> Run:
        """The same run at another step."""
        return Run(self.rule, self.flags, self.h, self.maximize, step)  # (replace() is slower)


def describe(optimizer: Any, group: Mapping[str, Any]) -> Run:
    """The :class:`Run` of ``group`` (its rule, flags, scalars and ``maximize``), step 0."""
    rule: Rule = optimizer.rule_for(group)
    return Run(rule, rule.flags(group), rule.scalars(group), bool(group.get("maximize", False)))


class Engine(Protocol):
    """What the optimizer shell needs of an engine (see the module docstring)."""

    name: str

    def prepare(self, optimizer: Any) -> None:
        """Lay out every parameter group."""

    def step_group(self, optimizer: Any, group: dict[str, Any]) -> None:
        """Step every parameter of ``group`` that has a gradient."""

    def state_loaded(self, optimizer: Any) -> None:
        """Adopt the state ``load_state_dict`` put into ``optimizer.state``."""

    def state_runs(self, optimizer: Any, group: dict[str, Any]) -> list[tuple[Any, dict]]:
        """``(param, {key: state})`` runs of ``group``'s parameters that have state."""

    def pieces(self, optimizer: Any, group: dict[str, Any]) -> list[Any]:
        """Count one step of ``group``'s parameters with a gradient; their pieces (global rules)."""
