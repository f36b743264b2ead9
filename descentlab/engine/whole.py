"""Tensor rules on flat buffers: each parameter whole, or same-shape neighbours as one batch.

The flat engines lay out a tensor rule's group like any other (parameters,
gradients and the state entries shaped like their parameter in contiguous
buffers, see :mod:`descentlab.engine.buffers`), but never hand the rule a
flat run. After the gradients are gathered, the parameters with a gradient
are stepped in *batches*: maximal sequences of neighbouring slots with the
same shape and step count (for a rule with :attr:`~descentlab.rules.base.TensorRule.batched`;
one parameter per batch otherwise). A batch's parameters, gradients and flat
state are strided ``[B, *shape]`` views of the buffers
(:meth:`~descentlab.engine.buffers.Bucket.batch_view`), so a batched rule
updates them in place with one call (Muon's Newton–Schulz as ``torch.bmm``
over the stack); state entries of other shapes are stacked for the call and
copied back. A rule that is not batched is handed ``.grad`` itself, in
place of the flat view: the flat engine does not copy its gradients into
the buffer first (a per-tensor step gains nothing from the copy). The
results are those of the reference engine, which steps each parameter
alone (a batched kernel computes each matrix of a stack as its unbatched
counterpart does; the conformance suite checks it).
"""

from __future__ import annotations

from typing import Any

import torch

from descentlab.engine.base import Run
from descentlab.engine.buffers import Bucket
from descentlab.engine.reference import step_whole

__all__ = ["step_whole_bucket"]


def _batches(b: Bucket, active: list[bool], batched: bool) -> list[tuple[int, int]]:
    """Maximal runs of active neighbouring slots with one shape and one step count."""
    out, i, n = [], 0, len(b.params)
    while i < n:
        if not active[i]:
            i += 1
            continue
        j = i + 1
        while (
            batched
            and j < n
            and active[j]
            and b.shapes[j] == b.shapes[i]
            and b.steps[j] == b.steps[i]
        ):
            j += 1
        out.append((i, j))
        i = j
    return out


def step_whole_bucket(optimizer: Any, b: Bucket, run: Run, active: list[bool]) -> None:
    """One step of the tensor rule ``run.rule`` for the ``active`` slots of ``b``."""
    rule = run.rule
    for i, j in _batches(b, active, rule.batched):
        step = b.advance(i, j)
        states = [optimizer.state[b.params[k]] for k in range(i, j)]
        if not rule.batched:  # on ``.grad`` itself (never copied into the buffer)
            grad = b.params[i].grad
            step_whole(b.param_views[i], -grad if run.maximize else grad, states[0], run.at(step))
            continue
        param = b.batch_view(b.data, i, j)
        grad = b.batch_view(b.grad, i, j)
        grad = -grad if run.maximize else grad
        stacked, copied = {}, []
        for key in states[0]:
            if key == "step":
                continue
            if key in b.state and b.fits(i, states[0][key]):
                stacked[key] = b.batch_view(b.state[key], i, j)
            else:
                stacked[key] = torch.stack([s[key] for s in states])
                copied.append(key)
        rule.update(param, grad, stacked, run.h, step, run.flags)
        for key in copied:
            torch._foreach_copy_([s[key] for s in states], list(stacked[key].unbind(0)))
