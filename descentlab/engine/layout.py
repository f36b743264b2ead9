"""Where each parameter of a group lives: in a flat buffer, or stepped per tensor.

A :class:`GroupLayout` is made when the optimizer is built (``prepare``) and
kept up to date at every step by :func:`arrange`, which moves as little as it
can (the rule of :mod:`descentlab.engine.sharing`: nothing another tensor sees
is moved):

* a parameter that can be flattened (:func:`~descentlab.engine.buffers.flattenable`)
  and whose memory nothing else sees goes into a bucket, one per
  (device, dtype) of the parameters placed together; for a batched tensor
  rule (unless it depends on the order: ``TensorRule.in_any_order``) the
  bucket's slots are ordered by shape (:func:`by_shape`), so that
  same-shape parameters are neighbours wherever they sit in the group and are
  stepped as one ``[B, *shape]`` batch (slot order is the engine's business:
  ``optimizer.state`` and ``state_dict()`` follow ``param_groups``);
* one whose memory another tensor sees (an alias taken before the optimizer
  was built, a ``state_dict()`` held in memory, a second optimizer's buffer, a
  pending autograd graph) *waits*: it is stepped per tensor, and moved into a
  new bucket at the first step at which nothing else sees it any more;
* a DTensor parameter (FSDP2's ``fully_shard``) of an elementwise rule is
  stepped on its local shard in a flat buffer of its own
  (:class:`~descentlab.engine.shards.ShardMirror`);
* the others (other DTensors and subclasses, non-contiguous, meta, shared
  memory, storage shared between parameters) are stepped per tensor for good.

A parameter leaves its bucket when it leaves the group, or when its ``.data``
was replaced by a tensor that cannot simply be copied back into its slot
(another dtype, shape or device, as after ``model.double()``; or one that
another tensor sees); it is then placed again as above. The buckets of the
other parameters are not touched, so their aliases stay live.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import Tensor

from descentlab.engine.buffers import Bucket, flattenable, real_dtype
from descentlab.engine.shards import ShardMirror, is_dtensor, mirrorable
from descentlab.engine.sharing import data_private
from descentlab.engine.slot_check import same_items
from descentlab.rules.base import ELEMENTWISE, TENSOR, Rule

__all__ = ["GroupLayout", "arrange", "by_shape", "storage_ptr"]


def storage_ptr(p: Tensor) -> int | None:
    """Address of ``p``'s storage, or None for wrapper subclasses (DTensor) that have none."""
    if type(p) not in (torch.Tensor, torch.nn.Parameter) or type(p.data) is not torch.Tensor:
        return None
    return p.untyped_storage().data_ptr()


def by_shape(params: list[Tensor]) -> list[Tensor]:
    """``params`` with same-shape tensors next to each other: shapes in the order of their
    first appearance, each shape's tensors in their own order (a stable grouping)."""
    together: dict[tuple[torch.Size, bool], list[Tensor]] = {}
    for p in params:
        together.setdefault((p.shape, p.is_complex()), []).append(p)
    return [p for same in together.values() for p in same]


class GroupLayout:
    """How one parameter group is stored.

    Attributes:
        params: the group's own list object (to recognise the group).
        members: a copy of that list when last arranged (so a parameter added, removed or
            replaced in the list, even at the same position, is seen).
        buckets: the flat buffers.
        fallback: parameters stepped per tensor (including ``waiting``).
        waiting: flattenable parameters whose memory another tensor sees.
        shards: the DTensor parameters stepped on their local shards, if any.
    """

    def __init__(self, params: list[Tensor]) -> None:
        self.params = params
        self.members: list[Tensor] | None = None
        self.buckets: list[Bucket] = []
        self.fallback: list[Tensor] = []
        self.waiting: list[Tensor] = []
        self.shards: ShardMirror | None = None

    def steady(self, params: list[Tensor]) -> bool:
        """Whether ``params`` (the group's list) is laid out here and a step needs nothing but
        one update per bucket: no parameter stepped apart, every bucket
        :meth:`~descentlab.engine.buffers.Bucket.steady` (so nothing to arrange or gather)."""
        return (
            self.params is params
            and self.same_members()
            and not self.fallback
            and self.shards is None
            and all([bucket.steady() for bucket in self.buckets])
        )

    def same_members(self) -> bool:
        """Whether the group's list holds the very tensors it held when last arranged."""
        return self.members is not None and same_items(self.params, self.members)

    def current(self) -> bool:
        """Whether the layout still fits its group (re-attaching replaced ``.data`` on the way)."""
        if not self.same_members():
            return False
        if self.waiting and any(map(data_private, self.waiting)):
            return False
        if self.shards is not None and not self.shards.current():
            return False
        return not any([bucket.moved() for bucket in self.buckets])


def arrange(optimizer: Any, layout: GroupLayout, rule: Rule) -> None:
    """Bring ``layout`` up to date with its group (of ``rule``), moving as little as possible."""
    params = layout.params
    members = {id(p) for p in params}
    for bucket in layout.buckets:
        gone = [i for i, p in enumerate(bucket.params) if id(p) not in members]
        bucket.release(sorted({*gone, *bucket.moved()}))
    layout.buckets = [b for b in layout.buckets if not b.empty()]
    placed = {id(p) for b in layout.buckets for p in b.params}
    everything = [p for g in optimizer.param_groups for p in g["params"]]
    owners = Counter(storage_ptr(p) for p in everything)
    together: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    fallback, waiting, sharded = [], [], []
    for p in params:
        if id(p) in placed:
            continue
        ptr = storage_ptr(p)
        if rule.kind == ELEMENTWISE and is_dtensor(p) and mirrorable(p):
            sharded.append(p)
        elif ptr is None or not flattenable(p) or owners[ptr] > 1:
            fallback.append(p)
        elif not data_private(p):
            waiting.append(p)
        else:
            together.setdefault((p.device, real_dtype(p)), []).append(p)
    batches = rule.kind == TENSOR and rule.batched and rule.in_any_order
    for members_ in together.values():
        slots = by_shape(members_) if batches else members_
        bucket = Bucket(slots)
        position = {id(p): k for k, p in enumerate(members_)}
        bucket.order = sorted(range(len(slots)), key=lambda k: position[id(slots[k])])
        bucket.adopt_state(optimizer.state, rule)
        layout.buckets.append(bucket)
    layout.shards = ShardMirror(optimizer, sharded, rule) if sharded else None
    layout.fallback = fallback + waiting
    layout.waiting = waiting
    layout.members = list(params)
