"""Global rules: one step of the whole optimizer around reductions over all its parameters.

Some algorithms estimate a step size from sums over *every* parameter of the
optimizer: D-Adaptation and Prodigy (Defazio & Mishchenko 2023; Mishchenko &
Defazio 2024) compute ⟨g, s⟩-type dot products and ‖s‖₁ over all groups,
derive a new estimate d of the distance to the solution, and only then
update the parameters with it. Neither an elementwise rule (which may see
only a run of coordinates) nor a tensor rule (one parameter) can express that.

A :class:`GlobalRule` (kind :data:`~descentlab.rules.base.GLOBAL`) therefore
steps all groups at once. The optimizer shell
(:class:`~descentlab.optim.reduction.GlobalRuleOptimizer`) asks the engine,
for every group, for its :class:`Piece` s — the parameters that have a
gradient, with their state created lazily and their step counters advanced
(``engine.pieces(optimizer, group)``) — and hands all of them to
:meth:`GlobalRule.step_all` once per step. What a piece is depends on the
engine: a whole contiguous run of a flat buffer (normally one per group and
dtype) under the flat engines, one tensor under the reference engine. The
rule computes its reductions on the pieces (one dot product per piece, so
one per buffer under the flat engines, not one per tensor), sums them on the
host in float64 (:func:`global_sums`, one synchronisation), and then updates
the pieces elementwise in place. The padding between slots of a flat buffer
is zero in the parameters, gradients and state, so it adds nothing to a sum
as long as the rule keeps zero state at zero parameters and gradients.

Engines agree to rounding (the order of summation differs between one dot
over a buffer and one per tensor), not bit for bit. The estimates these
rules keep between steps (d, the running numerator, the step count k) live
in the parameter groups under the reference packages' names, as there
(:meth:`GlobalRule.group_state`), so ``state_dict()`` carries them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from descentlab.rules.base import GLOBAL, Rule

__all__ = ["Piece", "GlobalRule", "global_sums", "dot"]


@dataclass
class Piece:
    """Part of a group's parameters that steps now: tensors of one shape, updated in place.

    Attributes:
        param: the coordinates (a run of a flat buffer, or one parameter).
        grad: the gradient of the objective to minimise (negated under ``maximize``).
        state: the rule's state entries over the same coordinates.
    """

    param: Tensor
    grad: Tensor
    state: dict[str, Tensor]


def dot(a: Tensor, b: Tensor) -> Tensor:
    """⟨a, b⟩ over every coordinate, as a 0-dim tensor (no synchronisation)."""
    return torch.dot(a.reshape(-1), b.reshape(-1))


def global_sums(*values: Sequence[Tensor | float], all_reduce: bool = False) -> list[float]:
    """The sum of each sequence of ``values`` (0-dim tensors or floats), as Python floats.

    Accumulated in float64, with one synchronisation for all of them. With
    ``all_reduce`` (sharded parameters) the sums are also summed over the
    processes of the default ``torch.distributed`` group, in one call.
    """
    zero = torch.zeros((), dtype=torch.float64)
    totals = torch.stack([
        torch.stack([torch.as_tensor(v).to("cpu", torch.float64) for v in vs]).sum() if vs else zero
        for vs in values
    ])
    if all_reduce and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    return totals.tolist()


class GlobalRule(Rule):
    """Base class of a rule that steps every group at once (see the module docstring).

    Subclasses declare their hyperparameters (:attr:`hparams`), create state
    per parameter (:meth:`init_state`, entries shaped like the parameter so
    the flat engines keep them in buffers), name the values they keep in the
    groups (:meth:`group_state`) and implement :meth:`step_all`.
    """

    kind: ClassVar[str] = GLOBAL

    def group_state(self, group: Mapping[str, Any]) -> dict[str, Any]:
        """Keys a group keeps between steps and their initial values (given its hyperparameters)."""
        return {}

    def step_all(self, groups: list[dict[str, Any]], pieces: list[list[Piece]]) -> None:
        """One step of the whole optimizer: ``pieces[i]`` are those of ``groups[i]``."""
        raise NotImplementedError

    def update(self, param, grad, state, h, step, flags) -> None:
        """Global rules have no per-run update; engines call :meth:`step_all` instead."""
        raise RuntimeError(f"{self.name} steps all groups at once (GlobalRule.step_all)")
