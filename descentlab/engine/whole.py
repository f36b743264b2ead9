"""Tensor rules on flat buffers: each parameter whole, or same-shape neighbours as one batch.

The flat engines lay out a tensor rule's group like any other (parameters,
gradients and the state entries shaped like their parameter in contiguous
buffers, see :mod:`descentlab.engine.buffers`), but never hand the rule a
flat run. After the gradients are gathered, the parameters with a gradient
are stepped in *batches*: maximal sequences of neighbouring slots with the
same shape and step count (for a rule with :attr:`~descentlab.rules.base.TensorRule.batched`;
one parameter per batch otherwise). Such a rule's buckets hold their slots
grouped by shape (:func:`~descentlab.engine.layout.by_shape`), so the
same-shape parameters of a group are neighbours wherever they sit in it (a
model that interleaves weights and biases, or a transformer's d×d, 4d×d and
d×4d matrices, gets one batch per shape while the step counts agree). A
batch's parameters, gradients and flat state are strided ``[B, *shape]``
views of the buffers (:meth:`~descentlab.engine.buffers.Bucket.batch_view`), so a batched rule
updates them in place with one call (Muon's Newton–Schulz as ``torch.bmm``
over the stack); state entries of other shapes (row and column statistics,
preconditioner matrices) are kept stacked: at the batch's first step they
are copied into one ``[B, ...]`` tensor of each entry's own layout (a
column-major matrix stays column-major) and ``optimizer.state[p]`` is
pointed at its slices, so later steps hand the rule the stack with no copy
(until the batch or the state changes, e.g. after ``load_state_dict``). A
rule that is not batched is handed ``.grad`` itself, in place of the flat
view: the flat engine does not copy its gradients into the buffer first (a
per-tensor step gains nothing from the copy). The results are those of the
reference engine, which steps each parameter alone (a batched kernel
computes each matrix of a stack as its unbatched counterpart does; the
conformance suite checks it).
"""

from __future__ import annotations

import collections
import contextlib
import operator
import time
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from descentlab.engine.base import Run
from descentlab.engine.buffers import Bucket
from descentlab.engine.reference import step_whole

__all__ = ["ThreadChoice", "one_thread", "step_whole_bucket", "thread_choice"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch ops single-threaded for a while, restoring the thread count after.

    For work made of small ops (per-parameter copies, a small stack): opening an
    OpenMP region for each costs more than it saves, and on a busy machine each
    region can wait milliseconds for its second thread.
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


#: bucket → {(first slot, stop, key): (the stack, its slices: the entries in optimizer.state)}
_STACKS: weakref.WeakKeyDictionary[Bucket, dict[tuple[int, int, str], tuple[Tensor, list]]] = (
    weakref.WeakKeyDictionary()
)


#: bucket → {(first slot, stop): its stack's ThreadChoice}
_CHOICES: weakref.WeakKeyDictionary[Bucket, dict[tuple[int, int], ThreadChoice]] = (
    weakref.WeakKeyDictionary()
)


def _empty_stack(first: Tensor, count: int) -> Tensor | None:
    """An empty ``[count, *first.shape]`` stack whose slices have ``first``'s layout, or None
    for a layout other than row-major or (matrices) column-major."""
    if first.is_contiguous():
        return first.new_empty((count, *first.shape))
    if first.dim() == 2 and first.t().is_contiguous():
        return first.new_empty((count, first.shape[1], first.shape[0])).mT
    return None


def _stacked(b: Bucket, i: int, j: int, key: str, states: list[dict[str, Any]]) -> Tensor:
    """Entry ``key`` of slots ``i … j-1`` as one stack; its slices become the states' entries
    (a stack of mixed layouts is a copy, and the caller copies it back)."""
    stacks = _STACKS.setdefault(b, {})
    entries = [s[key] for s in states]
    found = stacks.get((i, j, key))
    if found is not None and all(map(operator.is_, entries, found[1])):
        return found[0]
    first = entries[0]
    stack = _empty_stack(first, len(entries))
    if stack is None or any(e.shape != first.shape or e.dtype != first.dtype for e in entries):
        return torch.stack(entries)
    views = list(stack.unbind(0))
    torch._foreach_copy_(views, entries)
    for s, view in zip(states, views, strict=True):
        s[key] = view
    for a, z, k in [other for other in stacks if other[2] == key]:
        if a < j and i < z:  # an earlier stack of some of these slots: their entries moved
            del stacks[(a, z, k)]
    stacks[(i, j, key)] = (stack, views)
    return stack


class ThreadChoice:
    """Whether a stack is stepped on one torch thread or on all: timed, and re-timed now and
    then.

    Each op of a batched call opens a parallel region over torch's threads. On a
    busy machine every region waits for a descheduled thread (measured under load
    8: Adafactor on 24 × 64² took 190 ms a step on two threads, 1.9 ms on one),
    while on a quiet one the threads pay from a few ten thousand elements on.
    Which is faster depends on the stack and on the load of the moment, so the
    engine measures it, per stack of at least :attr:`SMALLEST` elements: it
    steps the stack one way (first on all threads) and, at the fourth step and
    then every ``interval`` steps, once the other way (the *probe*); if the
    probe took less than the median of the kept way's last three steps (a probe
    of one thread: less than :attr:`MARGIN` of it, so that ties go to all
    threads), its way is kept from then on.
    The interval grows fourfold (up to :attr:`LONGEST`) each time the probe
    loses and falls back to :attr:`SHORTEST` when it wins: on a quiet machine
    the probes of one thread fall on steps 4, 20, 84, 340, … and then every
    1024th (each costs what one thread loses there on that step). A step of
    the kept way that takes more than :attr:`JUMP` times the slowest of its
    last three (the load changed?) brings the next probe forward to within
    :attr:`SHORTEST` steps, compared as usual with the median of the kept
    way's last three (so a lone spike does not win it): on this machine a
    two-thread region sometimes waits about 8 ms for the second vCPU for
    seconds at a time, and one thread then steps 2,000 × 1,000 Adam
    parameters in 1.5-2 ms. Only for a
    rule with :attr:`~descentlab.rules.base.TensorRule.same_bits_on_any_thread_count`,
    and for elementwise runs updated by a kernel
    (:meth:`~descentlab.engine.flat.FlatEngine.kernel_call`): the results are the
    same either way.
    """

    SHORTEST = 4
    LONGEST = 1024
    #: a step of the kept way slower than this many times the slowest of its last three
    #: brings the next probe forward to within :attr:`SHORTEST` steps
    JUMP = 2.0
    #: a probe of one thread wins only if it took less than this part of the kept way's time
    MARGIN = 0.9
    #: stacks of fewer elements are not timed (torch does not split their ops over threads)
    SMALLEST = 1 << 15

    __slots__ = ("one", "recent", "interval", "countdown")

    def __init__(self) -> None:
        self.one = False  # the kept way: one thread (True) or all (False)
        self.recent: collections.deque[float] = collections.deque(maxlen=3)  # its last times
        self.interval = self.SHORTEST
        self.countdown = 4  # the first probe after three steps (the first may allocate)

    def run(self, call: Any, *args: Any) -> None:
        """``call(*args)`` the kept way, or (a probe) the other way, timed."""
        self.countdown -= 1
        probe = self.countdown == 0
        one = self.one != probe
        start = time.perf_counter()
        if one:
            with one_thread():
                call(*args)
        else:
            call(*args)
        elapsed = time.perf_counter() - start
        if not probe:
            if self.recent and elapsed > self.JUMP * max(self.recent):
                # the kept way got slower (the load changed?): the next probe within a few
                # steps, against the median of the steps then (a lone spike does not win it)
                self.countdown = min(self.countdown, self.SHORTEST)
                self.interval = self.SHORTEST
            self.recent.append(elapsed)
            return
        recent = sorted(self.recent)  # never empty: a kept step precedes every probe
        margin = self.MARGIN if one else 1.0  # ties go to all threads
        if elapsed < margin * recent[len(recent) // 2]:  # the other way was faster
            self.one, self.interval = one, self.SHORTEST
            self.recent.clear()
        else:
            self.interval = min(4 * self.interval, self.LONGEST)
        self.countdown = self.interval


def thread_choice(b: Bucket, i: int, j: int) -> ThreadChoice:
    """The :class:`ThreadChoice` of slots ``i … j-1`` of ``b`` (a stack, or an elementwise
    run), made at its first step and looked up after."""
    choices = _CHOICES.setdefault(b, {})
    choice = choices.get((i, j))
    if choice is None:
        choice = choices[(i, j)] = ThreadChoice()
    return choice


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
        stacked, kept = {}, []
        for key in states[0]:
            if key == "step":
                continue
            if key in b.state and b.fits(i, states[0][key]):
                stacked[key] = b.batch_view(b.state[key], i, j)
            else:
                stacked[key] = _stacked(b, i, j, key, states)
                kept.append(key)
        args = (param, grad, stacked, run.h, step, run.flags)
        if (rule.same_bits_on_any_thread_count and torch.get_num_threads() > 1
                and param.numel() >= ThreadChoice.SMALLEST):
            thread_choice(b, i, j).run(rule.update, *args)
        else:
            rule.update(*args)
        for key in kept:
            stack = stacked[key]
            own = _STACKS[b].get((i, j, key), (None,))[0]
            if own is not stack:  # a copy (mixed layouts), or replaced by the rule: copy back
                torch._foreach_copy_([s[key] for s in states], list(stack.unbind(0)))
