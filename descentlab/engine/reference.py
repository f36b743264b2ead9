"""The reference engine: a plain loop over parameters, one rule call per tensor.

This is the executable specification every faster engine is tested against.
Per parameter with a gradient it

1. negates the gradient under ``maximize``;
2. creates the rule's state on first use (lazy state, plus the step counter);
3. increments the step counter and calls ``rule.update`` with the scalars as
   Python floats and the 1-based step number.

A tensor rule (:mod:`descentlab.rules.base`) gets each parameter whole, with
a Python int step; a batched one gets it as a batch of one (``[1, *shape]``
views, so its in-place updates reach the parameter and its state).

Complex parameters are handled as real tensors of twice the size
(``torch.view_as_real``), as torch.optim does, so each real and imaginary
part is one coordinate. A sparse gradient goes to the rule's
``sparse_update`` (SGD, Adagrad, SparseAdam); rules without one refuse it
with a clear error. DTensor parameters of a tensor rule (FSDP2) are
assembled whole on an owning rank (:mod:`descentlab.engine.owners`).
The step counter lives on the CPU, as torch.optim's does outside
capturable/fused mode (so reading it never synchronises a device, and
parameters on the ``meta`` device step as with torch).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import torch
from torch import Tensor

from descentlab.engine.base import Run, describe
from descentlab.engine.shards import is_dtensor
from descentlab.rules.base import TENSOR, Rule
from descentlab.rules.reduction import Piece

__all__ = ["ReferenceEngine", "init_param_state", "check_grad", "step_whole"]


def check_grad(param: Tensor, rule: Rule, flags: Any) -> bool:
    """Whether ``param.grad`` is sparse; raise if the rule cannot take it with these flags."""
    grad = param.grad
    if grad is None:
        return False
    try:
        if not grad.is_sparse:
            rule.check_dense()
            return False
        rule.check_sparse(flags)
    except RuntimeError as err:
        raise RuntimeError(f"{err} (param of shape {tuple(param.shape)})") from None
    return True


def init_param_state(
    rule: Rule, param: Tensor, state: MutableMapping[str, Any], flags: Any, h: Any
) -> None:
    """Fill an empty state: the step counter (a float32 CPU tensor, as torch's) and buffers."""
    state["step"] = torch.zeros((), dtype=torch.float32)
    state.update(rule.init_state(param, flags, h))


def _real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def step_whole(param: Tensor, grad: Tensor, state: dict[str, Any], run: Run) -> None:
    """One tensor-rule update of one parameter in its own shape (a batch of one if batched)."""
    rule = run.rule
    buffers = {k: v for k, v in state.items() if k != "step"}
    if rule.batched:
        param, grad = param.unsqueeze(0), grad.unsqueeze(0)
        buffers = {k: v.unsqueeze(0) for k, v in buffers.items()}
    rule.update(param, grad, buffers, run.h, run.step, run.flags)


def _position(optimizer: Any, first: Tensor) -> int:
    """Position of ``first`` among the DTensor parameters of the optimizer's tensor-rule groups."""
    k = 0
    for group in optimizer.param_groups:
        if optimizer.rule_for(group).kind != TENSOR:
            continue
        for p in group["params"]:
            if p is first:
                return k
            k += is_dtensor(p)
    raise ValueError("the parameter is not in this optimizer")


class ReferenceEngine:
    """Runs a rule parameter by parameter (see the module docstring)."""

    name = "reference"

    def step_group(self, optimizer: Any, group: dict[str, Any]) -> None:
        """Apply the group's rule to every parameter of ``group`` that has a gradient."""
        run = describe(optimizer, group)
        rule, flags, h = run.rule, run.flags, run.h
        if rule.kind == TENSOR:
            matrices = [p for p in group["params"] if is_dtensor(p)]
            if matrices:
                from descentlab.engine.owners import step_sharded_matrices  # imports this module

                step_sharded_matrices(optimizer, matrices, _position(optimizer, matrices[0]), run)
        for p in group["params"]:
            if p.grad is None or (rule.kind == TENSOR and is_dtensor(p)):
                continue
            sparse = check_grad(p, rule, flags)
            state = optimizer.state[p]
            if not state:
                init_param_state(rule, p, state, flags, h)
            state["step"] += 1
            grad = -p.grad if run.maximize else p.grad
            if sparse:
                rule.sparse_update(p, grad, state, h, float(state["step"]), flags)
            elif rule.kind == TENSOR:
                step_whole(p, grad, state, run.at(int(state["step"])))
            else:
                buffers = {k: (v if k in rule.scalar_state else _real(v)) for k, v in state.items()}
                rule.update(_real(p), _real(grad), buffers, h, float(state["step"]), flags)

    def pieces(self, optimizer: Any, group: dict[str, Any]) -> list[Piece]:
        """A global rule's pieces of ``group``: each parameter with a gradient, counted one step.

        State is created lazily and the step counter advanced, as for the
        other kinds; each piece is the parameter (its real view) in its own
        shape. See :mod:`descentlab.rules.reduction`.
        """
        run = describe(optimizer, group)
        out = []
        for p in group["params"]:
            if p.grad is None:
                continue
            check_grad(p, run.rule, run.flags)  # global rules take dense gradients only
            state = optimizer.state[p]
            if not state:
                init_param_state(run.rule, p, state, run.flags, run.h)
            state["step"] += 1
            grad = -p.grad if run.maximize else p.grad
            buffers = {k: _real(v) for k, v in state.items() if k != "step"}
            out.append(Piece(_real(p), _real(grad), buffers))
        return out

    def state_runs(self, optimizer: Any, group: dict[str, Any]) -> list[tuple[Tensor, dict]]:
        """Each parameter of ``group`` that has state, with its state entries of its shape.

        Real views, one pair per tensor (see :meth:`FlatEngine.state_runs`).
        """
        out = []
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state:
                entries = {k: _real(v) for k, v in state.items()
                           if k != "step" and isinstance(v, Tensor) and v.shape == p.shape}
                out.append((_real(p), entries))
        return out

    def prepare(self, optimizer: Any) -> None:
        """Nothing to lay out: parameters, gradients and state stay where they are."""

    def state_loaded(self, optimizer: Any) -> None:
        """Nothing to rebuild: the reference engine reads ``optimizer.state`` directly."""
