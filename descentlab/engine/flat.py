"""The flat engine: one rule call per contiguous buffer instead of one per tensor.

On the first step of a parameter group its parameters are moved into flat
buffers, one per (device, dtype) (:class:`~descentlab.engine.buffers.Bucket`):
parameters and gradients become views of them, and the optimizer state is
flat with per-parameter views in ``optimizer.state`` (so ``state_dict()`` is
per-parameter and loads into any engine).

Each step then follows the reference engine's semantics exactly:

* a parameter whose ``.grad`` is ``None`` is left untouched and its step
  counter does not advance (``optimizer.zero_grad()``, ``model.zero_grad()``);
* a gradient that is not the flat view (a fresh one after
  ``zero_grad(set_to_none=True)``, or one assigned with ``p.grad = ...``) is
  copied into the flat buffer and ``.grad`` is pointed back at the view, so
  the next ``backward`` accumulates in place; with ``zero_grad(set_to_none=
  False)`` gradients never leave the buffer and no copy is made;
* parameters are updated in *runs*: maximal sequences of neighbouring
  parameters that have a gradient and share their step count and scalar state.
  Normally that is one run over the whole buffer.

The eager update here passes the hyperparameters as Python floats like the
reference and works on the buffer in chunks of :attr:`FlatEngine.chunk`
elements, which bounds the temporaries the rule allocates and keeps them in
cache; the result is bitwise identical to the reference. The compiled engine
(:mod:`descentlab.engine.compiled`) replaces only :meth:`FlatEngine.apply`.

Per-tensor fallback: parameters that cannot be flattened (see
:func:`~descentlab.engine.buffers.flattenable`: DTensor and other tensor
subclasses, non-contiguous or storage-sharing parameters) are stepped by the
reference engine. Sparse gradients are refused with the same error as the
reference engine's.
"""

from __future__ import annotations

import contextlib
import operator
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from descentlab.engine.buffers import Bucket, flattenable, real_dtype
from descentlab.engine.reference import ReferenceEngine, check_grad
from descentlab.rules.base import Flags, Rule

__all__ = ["FlatEngine", "GroupLayout", "one_thread"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch ops single-threaded for a while.

    Per-parameter copies are small; opening an OpenMP region for each costs more
    than it saves, and on a busy machine each region can wait milliseconds for
    its second thread.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _storage_ptr(p: Tensor) -> int | None:
    """Address of ``p``'s storage, or None for wrapper subclasses (DTensor) that have none."""
    if type(p) not in (torch.Tensor, torch.nn.Parameter) or type(p.data) is not torch.Tensor:
        return None
    return p.untyped_storage().data_ptr()


class GroupLayout:
    """How one parameter group is stored: its buckets and the parameters left per-tensor."""

    def __init__(self, params: list[Tensor], buckets: list[Bucket], fallback: list[Tensor]):
        self.params = params  # the group's own list object, to recognise the group
        self.count = len(params)
        self.buckets = buckets
        self.fallback = fallback


class FlatEngine:
    """Runs a rule once per flat buffer, eagerly (see the module docstring)."""

    name = "flat"
    #: Elements per eager rule call: bounds temporaries to a few MB and keeps them in cache.
    chunk = 1 << 17

    def __init__(self) -> None:
        self._layouts: dict[int, GroupLayout] = {}
        self._reference = ReferenceEngine()

    # -- layout -------------------------------------------------------------------------

    def layout(self, optimizer: Any, group: dict[str, Any]) -> GroupLayout:
        """The group's layout, flattening its parameters the first time it is seen.

        Rebuilt when the group's parameter list changed or a parameter's
        ``.data`` was replaced by one of another dtype, shape or device.
        """
        params = group["params"]
        found = self._layouts.get(id(params))
        if found is not None and found.params is params and found.count == len(params):
            if all(bucket.attached() for bucket in found.buckets):
                return found
        built = self._build(optimizer, params)
        self._layouts[id(params)] = built
        return built

    def _build(self, optimizer: Any, params: list[Tensor]) -> GroupLayout:
        everything = [p for g in optimizer.param_groups for p in g["params"]]
        owners = Counter(_storage_ptr(p) for p in everything)
        buckets_now = [b for lay in self._layouts.values() for b in lay.buckets]
        ours = {b.data.untyped_storage().data_ptr() for b in buckets_now}
        # parameters still in one of our slots (when a layout is rebuilt) can move again
        mine = {
            id(p)
            for b in buckets_now
            for p, ptr in zip(b.params, b.data_ptrs, strict=True)
            if p.data_ptr() == ptr
        }
        groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        fallback = []
        for p in params:
            ptr = _storage_ptr(p)
            if ptr is None:
                fallback.append(p)  # no storage of its own: DTensor and other wrapper subclasses
            elif id(p) in mine or (flattenable(p) and owners[ptr] == 1 and ptr not in ours):
                groups.setdefault((p.device, real_dtype(p)), []).append(p)
            else:
                fallback.append(p)
        with one_thread():
            buckets = [Bucket(members) for members in groups.values()]
            for bucket in buckets:
                bucket.adopt_state(optimizer.state, optimizer.rule)
        return GroupLayout(params, buckets, fallback)

    def state_loaded(self, optimizer: Any) -> None:
        """Copy freshly loaded per-parameter state into the flat buffers (and bind views)."""
        for layout in self._layouts.values():
            for bucket in layout.buckets:
                bucket.adopt_state(optimizer.state, optimizer.rule)

    # -- stepping -------------------------------------------------------------------------

    def step_group(self, optimizer: Any, group: dict[str, Any]) -> None:
        """Apply ``optimizer.rule`` to every parameter of ``group`` that has a gradient."""
        layout = self.layout(optimizer, group)
        if layout.fallback:
            self._reference.step_group(optimizer, {**group, "params": layout.fallback})
        if not layout.buckets:
            return
        rule: Rule = optimizer.rule
        flags = rule.flags(group)
        h = rule.scalars(group)
        maximize = bool(group.get("maximize", False))
        for bucket in layout.buckets:
            self._step_bucket(optimizer, bucket, rule, flags, h, maximize)

    def _step_bucket(
        self, optimizer: Any, b: Bucket, rule: Rule, flags: Flags, h: dict, maximize: bool
    ) -> None:
        params = b.params
        grads = [p.grad for p in params]
        if all(map(operator.is_, grads, b.grad_views)) and all(b.has_state):
            if b.cohort.count(b.cohort[0]) == len(b.cohort):  # one cohort (C-speed check)
                self._run(b, 0, len(params), rule, flags, h, maximize)
                return
        active = [g is not None for g in grads]
        fresh = 0
        with one_thread():  # many small per-parameter copies: no OpenMP region for each
            for i, g in enumerate(grads):
                if g is None:
                    continue
                check_grad(params[i], rule)
                if g is not b.grad_views[i]:
                    b.adopt_grad(i, g)
                if not b.has_state[i]:
                    fresh = fresh or b.new_cohort()
                    b.init_state(i, optimizer.state[params[i]], rule, flags, h, fresh)
        members = Counter(b.cohort)
        i, n = 0, len(params)
        while i < n:
            if not active[i]:
                i += 1
                continue
            j = i + 1
            while j < n and active[j] and b.cohort[j] == b.cohort[i]:
                j += 1
            if members[b.cohort[i]] != j - i:  # the cohort splits: the run starts a new one
                b.cohort[i:j] = [b.new_cohort()] * (j - i)
            self._run(b, i, j, rule, flags, h, maximize)
            i = j

    def _run(
        self, b: Bucket, i: int, j: int, rule: Rule, flags: Flags, h: dict, maximize: bool
    ) -> None:
        """Step parameters ``i … j-1`` of ``b`` (one cohort, all with gradients) together."""
        step = b.steps[i] + 1
        b.steps[i:j] = [step] * (j - i)
        if i == 0 and j == len(b.params):
            b.step.add_(1)
        else:
            b.step[i:j].add_(1)
        start, end = b.span(i, j)
        state = {k: v[start:end] for k, v in b.state.items()}
        scalars = {k: v[i].clone() for k, v in b.scalar_state.items()}
        self.apply(
            rule, b.data[start:end], b.grad[start:end], state, scalars, h, step, flags, maximize
        )
        for key, value in scalars.items():
            b.scalar_state[key][i:j] = value

    def apply(
        self,
        rule: Rule,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        scalars: dict[str, Tensor],
        h: dict[str, float],
        step: int,
        flags: Flags,
        maximize: bool,
    ) -> None:
        """One rule update of a 1-D run; ``scalars`` (0-dim scalar state) is updated in place.

        Eager: chunks of :attr:`chunk` elements, hyperparameters as Python
        floats, each chunk starting from the same scalar state.
        """
        n = param.numel()
        result = scalars
        for a in range(0, n, self.chunk):
            e = min(a + self.chunk, n)
            g = -grad[a:e] if maximize else grad[a:e]
            result = {k: v.clone() for k, v in scalars.items()}
            chunk_state = {k: v[a:e] for k, v in state.items()}
            rule.update(param[a:e], g, {**chunk_state, **result}, h, float(step), flags)
        for key, value in result.items():
            scalars[key].copy_(value)
