"""The flat engine: one rule call per contiguous buffer instead of one per tensor.

When the optimizer is built (:meth:`FlatEngine.prepare`, also after
``add_param_group`` and unpickling) each group's parameters are moved into
flat buffers, one per (device, dtype) (:class:`~descentlab.engine.buffers.Bucket`,
placed by :mod:`descentlab.engine.layout`): parameters and gradients become
tensors over slots of them, and the optimizer state is flat with
per-parameter tensors in ``optimizer.state`` (so ``state_dict()`` is
per-parameter and loads into any engine). Aliases taken from then on
(``w = layer.weight.detach()``, ``g = p.grad``) are the live tensors, as
with torch.optim: nothing that another tensor sees is ever moved
(:mod:`descentlab.engine.sharing`).

Each step then follows the reference engine's semantics exactly:

* a parameter whose ``.grad`` is ``None`` is left untouched and its step
  counter does not advance (``optimizer.zero_grad()``, ``model.zero_grad()``);
* a gradient that is not the flat view (a fresh one after
  ``zero_grad(set_to_none=True)``, one assigned with ``p.grad = ...``, a DDP
  bucket view) is copied into the flat buffer; ``.grad`` is pointed at the
  flat view only if the same gradient comes back at the next step and
  nothing else sees it (:meth:`~descentlab.engine.buffers.Bucket.take_grad`),
  so ``zero_grad(set_to_none=False)`` loops soon stop copying (a tensor rule
  that is not batched reads ``.grad`` where it is, uncopied);
* parameters are updated in *runs*: maximal sequences of neighbouring
  parameters that have a gradient and share their step count and scalar state.
  Normally that is one run over the whole buffer.

The eager update here passes the hyperparameters as Python floats like the
reference and works on the buffer in chunks of :attr:`FlatEngine.chunk`
elements, which bounds the temporaries the rule allocates and keeps them in
cache; the result is bitwise identical to the reference. The compiled engine
(:mod:`descentlab.engine.compiled`) replaces only :meth:`FlatEngine.apply`.

A tensor rule's group is laid out the same way, but stepped by
:func:`~descentlab.engine.whole.step_whole_bucket`: each parameter whole, on
its views of the flat buffers, or same-shape neighbours as one batch.

DTensor parameters of an elementwise rule (FSDP2) are stepped on their local
shards in flat buffers of their own (:mod:`descentlab.engine.shards`).

Per-tensor fallback: parameters that cannot be flattened (other DTensors and
tensor subclasses, non-contiguous, meta or storage-sharing parameters) and
those whose memory another tensor sees (until it no longer does; a warning
says so once) are stepped by the reference engine. A parameter whose
gradient is sparse in this step is updated alone by the rule's
``sparse_update`` on its tensors over the flat buffers (rules without one
refuse it, as in the reference engine).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from descentlab.engine.base import Run, describe
from descentlab.engine.buffers import Bucket
from descentlab.engine.layout import GroupLayout, arrange
from descentlab.engine.reference import ReferenceEngine, check_grad
from descentlab.engine.whole import ThreadChoice, one_thread, step_whole_bucket, thread_choice
from descentlab.rules.base import TENSOR
from descentlab.rules.reduction import Piece

__all__ = ["FlatEngine", "State"]

#: a run's state (or scalar state) as handed to an update: key → tensor over the run
State = dict[str, Tensor]


class FlatEngine:
    """Runs a rule once per flat buffer, eagerly (see the module docstring)."""

    name = "flat"
    #: Elements per eager rule call: bounds temporaries to a few MB and keeps them in cache.
    chunk = 1 << 17

    def __init__(self) -> None:
        self._layouts: dict[int, GroupLayout] = {}
        self._reference = ReferenceEngine()
        self._warned_waiting = False

    # -- layout -------------------------------------------------------------------------

    def prepare(self, optimizer: Any) -> None:
        """Lay out every parameter group now, so that aliases taken from here on stay live."""
        for group in optimizer.param_groups:
            self.layout(optimizer, group)

    def layout(self, optimizer: Any, group: dict[str, Any]) -> GroupLayout:
        """The group's layout, brought up to date (see :mod:`descentlab.engine.layout`)."""
        params = group["params"]
        found = self._layouts.get(id(params))
        if found is None or found.params is not params:
            # forget groups whose parameter list was replaced, so that their parameters can move
            lists = {id(g["params"]) for g in optimizer.param_groups}
            self._layouts = {k: v for k, v in self._layouts.items() if k in lists}
            found = self._layouts[id(params)] = GroupLayout(params)
        elif found.current():
            return found
        with one_thread():
            arrange(optimizer, found, optimizer.rule_for(group))
        return found

    def state_loaded(self, optimizer: Any) -> None:
        """Copy freshly loaded per-parameter state into the flat buffers (and bind views)."""
        for group in optimizer.param_groups:
            layout = self._layouts.get(id(group["params"]))
            if layout is not None:
                for bucket in layout.buckets:
                    bucket.adopt_state(optimizer.state, optimizer.rule_for(group))
                if layout.shards is not None:
                    layout.shards.adopt(optimizer, optimizer.rule_for(group))

    # -- stepping -------------------------------------------------------------------------

    def step_group(self, optimizer: Any, group: dict[str, Any]) -> None:
        """Apply the group's rule to every parameter of ``group`` that has a gradient."""
        found = self._layouts.get(id(group["params"]))
        if found is not None and found.steady(group["params"]):
            run = describe(optimizer, group)
            if run.rule.kind != TENSOR:  # the usual step: one update per buffer, nothing else
                for bucket in found.buckets:
                    self._run(bucket, 0, len(bucket.params), run)
                return
        layout = self.layout(optimizer, group)
        if layout.waiting:
            self._warn_waiting(layout.waiting)
        if layout.fallback:
            self._reference.step_group(optimizer, {**group, "params": layout.fallback})
        if not layout.buckets and layout.shards is None:
            return
        run = describe(optimizer, group)
        if layout.shards is not None:
            layout.shards.step(self, optimizer, run)
        for bucket in layout.buckets:
            if run.rule.kind == TENSOR:
                # a rule stepped one tensor at a time reads ``.grad`` where it is: no copy
                active = self._gather(optimizer, bucket, run, copy=run.rule.batched)
                step_whole_bucket(optimizer, bucket, run, active)
            else:
                self._step_bucket(optimizer, bucket, run)

    def pieces(self, optimizer: Any, group: dict[str, Any]) -> list[Piece]:
        """A global rule's pieces of ``group``: maximal runs of each buffer, counted one step.

        A run is a sequence of neighbouring slots that have a gradient and the
        same step count, with its padding (zero everywhere), so normally one
        piece covers a whole buffer; parameters stepped per tensor are pieces
        of their own (see :mod:`descentlab.rules.reduction`).
        """
        layout = self.layout(optimizer, group)
        if layout.waiting:
            self._warn_waiting(layout.waiting)
        out = []
        if layout.fallback:
            out += self._reference.pieces(optimizer, {**group, "params": layout.fallback})
        run = describe(optimizer, group)
        for b in layout.buckets:
            active = self._gather(optimizer, b, run)
            i, n = 0, len(b.params)
            while i < n:
                if not active[i]:
                    i += 1
                    continue
                j = i + 1
                while j < n and active[j] and b.steps[j] == b.steps[i]:
                    j += 1
                b.advance(i, j)
                start, end = b.span(i, j)
                grad = b.grad[start:end]
                state = {k: v[start:end] for k, v in b.state.items()}
                out.append(Piece(b.data[start:end], -grad if run.maximize else grad, state))
                i = j
        return out

    def state_runs(self, optimizer: Any, group: dict[str, Any]) -> list[tuple[Tensor, dict]]:
        """The parameters of ``group`` that have state, as few 1-D runs as the layout allows.

        Each run is ``(param, {key: state})`` over the same coordinates: in a
        flat buffer, a maximal run of neighbouring slots that have state (the
        whole buffer, padding included, when every slot has), so an
        elementwise pass over the parameters and their state (Schedule-Free's
        ``train()``/``eval()``) is one call per buffer; parameters stepped per
        tensor (and DTensor shards) are pairs of their own, as
        :meth:`ReferenceEngine.state_runs` gives them.
        """
        layout = self.layout(optimizer, group)
        apart = layout.fallback + (layout.shards.params if layout.shards is not None else [])
        out = self._reference.state_runs(optimizer, {"params": apart}) if apart else []
        for b in layout.buckets:
            for i, j in b.stateful_runs():
                b.count_update(i, j)  # the caller updates these slots in place
                start, end = b.span(i, j)
                out.append((b.data[start:end], {k: v[start:end] for k, v in b.state.items()}))
        return out

    def _warn_waiting(self, waiting: list[Tensor]) -> None:
        if self._warned_waiting:
            return
        self._warned_waiting = True
        shapes = ", ".join(str(tuple(p.shape)) for p in waiting[:4])
        more = f" and {len(waiting) - 4} more" if len(waiting) > 4 else ""
        warnings.warn(
            f"descentlab: {len(waiting)} parameter(s) of shape {shapes}{more} share their memory "
            "with other tensors (e.g. `w = layer.weight.detach()` or a state_dict() taken before "
            "the optimizer was built, or after model.to()); so that those stay live, they are "
            "stepped per tensor (slower) until nothing else holds their memory",
            RuntimeWarning,
            stacklevel=4,
        )

    def _step_bucket(self, optimizer: Any, b: Bucket, run: Run) -> None:
        params = b.params
        if b.steady():
            self._run(b, 0, len(params), run)
            return
        active = self._gather(optimizer, b, run)
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
            self._run(b, i, j, run)
            i = j

    def _gather(self, optimizer: Any, b: Bucket, run: Run, copy: bool = True) -> list[bool]:
        """Bring gradients into the flat buffer (unless not ``copy``) and create missing state;
        which slots step.

        Sparse gradients are stepped here, alone, by the rule's sparse update
        (they are never copied into the buffer) and are not among those returned.
        """
        rule, params = run.rule, b.params
        grads = [p.grad for p in params]
        active = [g is not None for g in grads]
        foreign = [
            i
            for i, (g, v) in enumerate(zip(grads, b.grad_views, strict=True))
            if g is not None and g is not v
        ]
        del grads  # take_grads counts who else holds a gradient
        sparse = [i for i in foreign if check_grad(params[i], rule, run.flags)]
        if sparse:  # stepped alone by the rule's sparse update, never copied into the buffer
            foreign = [i for i in foreign if i not in sparse]
            for i in sparse:
                active[i] = False
        with one_thread():  # many small per-parameter copies: no OpenMP region for each
            if foreign and copy:
                b.take_grads(foreign)
            if not all(b.has_state):
                if any(not made and optimizer.state.get(p)
                       for made, p in zip(b.has_state, params, strict=True)):
                    # state written into optimizer.state directly (ZeroRedundancyOptimizer's
                    # load_state_dict does so) is adopted, as torch.optim would use it
                    b.adopt_state(optimizer.state, rule)
                fresh = b.new_cohort()
                for i in b.order:  # the group's order: state_dict() lists the state in it
                    if active[i] and not b.has_state[i]:
                        b.init_state(i, optimizer.state[params[i]], rule, run.flags, run.h,
                                     fresh)
            for i in sparse:
                self._step_sparse(optimizer, b, i, run)
        return active

    def _step_sparse(self, optimizer: Any, b: Bucket, i: int, run: Run) -> None:
        """Step parameter ``i`` of ``b`` alone with its sparse gradient (``rule.sparse_update``)."""
        p = b.params[i]
        state = optimizer.state[p]
        if not b.has_state[i]:
            b.init_state(i, state, run.rule, run.flags, run.h, 0)
        b.cohort[i] = b.new_cohort()  # its step now differs from its neighbours'
        b.steps[i] += 1
        b.step[i] += 1
        grad = -p.grad if run.maximize else p.grad
        run.rule.sparse_update(p, grad, state, run.h, float(b.steps[i]), run.flags)

    def _run(self, b: Bucket, i: int, j: int, run: Run) -> None:
        """Step parameters ``i … j-1`` of ``b`` (one cohort, all with gradients) together."""
        step = b.advance(i, j)
        start, end = b.span(i, j)
        scalars = b.scalars_at(i)
        if start == 0 and end == b.total:  # the whole buffer (the usual case): no slicing
            args = (run.at(step), b.data, b.grad, dict(b.state), scalars)
        else:
            state = {k: v[start:end] for k, v in b.state.items()}
            args = (run.at(step), b.data[start:end], b.grad[start:end], state, scalars)
        call = self.kernel_call(*args)
        if call is None:
            self.apply(*args)
        elif end - start >= ThreadChoice.SMALLEST and torch.get_num_threads() > 1:
            thread_choice(b, i, j).run(call)  # same bits either way: the faster way is kept
        else:
            call()
        b.keep_scalars(i, j, scalars)

    def kernel_call(self, run: Run, param: Tensor, grad: Tensor, state: State,
                    scalars: State) -> Callable[[], None] | None:
        """The update of a 1-D run as a call whose results do not depend on torch's thread
        count (a compiled kernel, torch's fused kernel), or None to :meth:`apply` it.

        :meth:`_run` times such a call on all threads and now and then on one
        (:class:`~descentlab.engine.whole.ThreadChoice`, runs of at least
        2^15 elements) and keeps the faster way. The eager update here has none.
        """
        return None

    def apply(self, run: Run, param: Tensor, grad: Tensor, state: State, scalars: State) -> None:
        """One elementwise update of a 1-D run; ``scalars`` (0-dim scalar state) in place.

        Eager: chunks of :attr:`chunk` elements, hyperparameters as Python
        floats, each chunk starting from the same scalar state.
        """
        rule, n = run.rule, param.numel()
        result = scalars
        for a in range(0, n, self.chunk):
            e = min(a + self.chunk, n)
            g = -grad[a:e] if run.maximize else grad[a:e]
            result = {k: v.clone() for k, v in scalars.items()}
            chunk_state = {k: v[a:e] for k, v in state.items()}
            rule.update(param[a:e], g, {**chunk_state, **result}, run.h, float(run.step), run.flags)
        for key, value in result.items():
            scalars[key].copy_(value)
