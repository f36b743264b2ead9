"""The optimizer shell of global rules: one step of every group at once.

:class:`GlobalRuleOptimizer` is :class:`~descentlab.optim.base.RuleOptimizer`
for a :class:`~descentlab.rules.reduction.GlobalRule` (D-Adaptation,
Prodigy): its ``step`` asks the engine for every group's pieces (state
created lazily, counters advanced) and hands them all to the rule's
``step_all`` once, so the rule's reductions run once per step over all
parameters (over the flat buffers under the flat engines). Its groups also
keep the values the rule carries between steps (``rule.group_state``: the
estimate ``d``, the step count ``k``, ...), under the reference packages'
names, so they are in ``state_dict()``. Every group runs the class's rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch

from descentlab.optim.base import RuleOptimizer
from descentlab.rules.reduction import GlobalRule

__all__ = ["GlobalRuleOptimizer"]


class GlobalRuleOptimizer(RuleOptimizer):
    """Base class of optimizers whose rule steps all groups at once (see the module docstring)."""

    rule: ClassVar[GlobalRule]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group as :class:`RuleOptimizer` does, with the rule's per-group values."""
        name = param_group.get("rule")
        if name is not None and name != self.rule.name:
            raise ValueError(
                f"{type(self).__name__} steps all its groups with one estimate; a group cannot "
                f"run rule {name!r} (use a separate optimizer for those parameters)"
            )
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for key, value in self.rule.group_state(group).items():
            group.setdefault(key, value)

    def missing_group_defaults(self, group: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The declared defaults, and the rule's per-group values as at the start."""
        declared = super().missing_group_defaults(group)
        return {**declared, **self.rule.group_state({**declared, **(group or {})})}

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimisation step (the closure, then one ``step_all`` over every group)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        pieces = [self._engine.pieces(self, group) for group in self.param_groups]
        self.rule.step_all(self.param_groups, pieces)
        return loss
