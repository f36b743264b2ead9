"""Elementwise rules on DTensor parameters (FSDP2's ``fully_shard``): flat buffers of local shards.

Under ``torch.distributed.fsdp.fully_shard`` every parameter is a DTensor
whose local tensor (``p._local_tensor``, what ``p.to_local()`` returns) is
this rank's rows, a view of FSDP's own padded shard storage, which FSDP
all-gathers before each forward. That storage must stay FSDP's, so the
parameters cannot be moved into a flat buffer as plain parameters are. An
elementwise rule does not care where a coordinate sits, though, so a
:class:`ShardMirror` runs it on the local shards with the flat engines'
machinery:

* each local shard has a plain *proxy* tensor that lives in a
  :class:`~descentlab.engine.buffers.Bucket` (one flat buffer per dtype and
  device, flat state, compiled kernels under ``engine="compiled"``/``"auto"``);
* a step points each proxy's gradient at the local tensor of ``p.grad``
  (which the bucket copies into its flat gradient), runs the bucket and
  copies the updated proxies back into the local shards (one
  ``torch._foreach_copy_``). A shard is copied into its proxy only when it
  changed since (the version counter of the DTensor or of its local tensor
  moved, or FSDP replaced the local tensor, as after ``model.to``), so
  normally only the copy out costs;
* ``optimizer.state[p]`` holds what torch.optim's classes hold under FSDP2:
  DTensors (same mesh, placements and global shape as ``p``) whose local
  tensors are views of the flat state, and the step counter as a plain
  float32 tensor. ``state_dict()``, ``load_state_dict``,
  ``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict`` /
  ``set_optimizer_state_dict`` therefore work as with torch.optim, and a
  checkpoint moves both ways between our class and torch's under FSDP2.

A gradient whose placements differ from its parameter's (a ``Partial`` sum)
is redistributed to the parameter's placements first. Parameters whose
local tensor is empty (more ranks than rows) are left to the per-tensor loop.
The results equal the per-tensor loop's bit for bit under the flat engine
(the same arithmetic on the same coordinates), to rounding under the
compiled one.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any

import torch
from torch import Tensor

from descentlab.engine.base import Run
from descentlab.engine.buffers import Bucket, real_dtype
from descentlab.rules.base import Rule

__all__ = ["ShardMirror", "is_dtensor", "local_tensor", "mirrorable"]


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a ``torch.distributed.tensor.DTensor`` (also as an ``nn.Parameter``).

    Without importing it: no DTensor exists before ``torch.distributed.tensor`` is imported.
    """
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def local_tensor(t: Tensor) -> Tensor:
    """This rank's local tensor of a DTensor (a view, no copy); any other tensor itself."""
    return t._local_tensor if is_dtensor(t) else t  # type: ignore[attr-defined]


def mirrorable(p: Tensor) -> bool:
    """Whether an elementwise rule can step DTensor ``p`` on its local shard in a flat buffer."""
    from torch.distributed.tensor import Partial

    if any(isinstance(pl, Partial) for pl in p.placements):  # type: ignore[attr-defined]
        return False
    loc = local_tensor(p)  # a view of FSDP's padded storage: only its values are copied
    return (loc.layout is torch.strided and not loc.is_sparse and loc.numel() > 0
            and (loc.is_floating_point() or loc.is_complex()) and loc.device.type != "meta")


class _Namespace:
    """What the flat engine reads of an optimizer while it steps proxies: their ``state``."""

    def __init__(self) -> None:
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)


class ShardMirror:
    """Local shards of one group's DTensor parameters, stepped in flat buffers.

    Attributes:
        params: the DTensor parameters.
        proxies: one plain tensor per parameter, living in ``buckets``.
        buckets: the flat buffers (one per device and dtype).
    """

    def __init__(self, optimizer: Any, params: list[Tensor], rule: Rule) -> None:
        self.params = params
        self.locals = [local_tensor(p) for p in params]
        self.proxies = [loc.detach().clone() for loc in self.locals]
        self.versions = [self._version(i) for i in range(len(params))]
        self.view = _Namespace()
        together: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for q in self.proxies:
            together.setdefault((q.device, real_dtype(q)), []).append(q)
        self.buckets = [Bucket(qs) for qs in together.values()]
        self._wrapped: list[tuple[int, ...]] = [()] * len(params)
        self._shown: list[tuple[int, ...]] = [()] * len(params)
        self.adopt(optimizer, rule)

    def _version(self, i: int) -> tuple[int, int]:
        """Version counters of parameter ``i`` and of its local tensor.

        Both are needed: ``p.copy_(...)`` on the DTensor (``model.load_state_dict``)
        bumps only the outer one, an in-place op on ``p.to_local()`` only the inner one.
        """
        return self.params[i]._version, self.locals[i]._version

    def current(self) -> bool:
        """Whether every local shard still has its proxy's dtype, shape and device."""
        return all(
            (loc.dtype, loc.shape, loc.device) == (q.dtype, q.shape, q.device)
            for loc, q in zip(map(local_tensor, self.params), self.proxies, strict=True)
        )

    def adopt(self, optimizer: Any, rule: Rule) -> None:
        """Take the state in ``optimizer.state`` (loaded, or assigned) into the flat state."""
        for p, q in zip(self.params, self.proxies, strict=True):
            saved = optimizer.state.get(p)
            self.view.state.pop(q, None)
            if saved:
                self.view.state[q] = {k: local_tensor(v) for k, v in saved.items()}
        for bucket in self.buckets:
            bucket.adopt_state(self.view.state, rule)
        self._wrapped = [()] * len(self.params)
        self._publish(optimizer)

    def step(self, engine: Any, optimizer: Any, run: Run) -> None:
        """One step of the parameters with a gradient (``engine``: the flat engine stepping)."""
        shown = [tuple(map(id, optimizer.state.get(p, {}).values())) for p in self.params]
        if shown != self._shown:  # state assigned to optimizer.state[p] directly: use it
            self.adopt(optimizer, run.rule)
        changed: list[int] = []
        for i, p in enumerate(self.params):
            loc = local_tensor(p)
            if loc is not self.locals[i] or self._version(i) != self.versions[i]:
                self.locals[i] = loc
                changed.append(i)
            grad = p.grad
            if grad is not None and is_dtensor(grad):
                if grad.placements != p.placements:  # type: ignore[attr-defined]
                    grad = grad.redistribute(p.device_mesh, p.placements)  # type: ignore[attr-defined]
                grad = local_tensor(grad)
            self.proxies[i].grad = grad
        if changed:
            torch._foreach_copy_(
                [self.proxies[i].data for i in changed], [self.locals[i].detach() for i in changed]
            )
        stepped = [i for i, q in enumerate(self.proxies) if q.grad is not None]
        try:
            for bucket in self.buckets:
                engine._step_bucket(self.view, bucket, run)
        finally:
            for q in self.proxies:
                q.grad = None  # hold no reference to FSDP's gradient memory
        if stepped:
            with torch.no_grad():
                torch._foreach_copy_(
                    [self.locals[i] for i in stepped], [self.proxies[i].data for i in stepped]
                )
            for i in stepped:
                self.versions[i] = self._version(i)
        self._publish(optimizer)

    def _publish(self, optimizer: Any) -> None:
        """Show each proxy's state in ``optimizer.state[p]`` as torch.optim keeps it under FSDP2."""
        from torch.distributed.tensor import DTensor

        for i, (p, q) in enumerate(zip(self.params, self.proxies, strict=True)):
            state = self.view.state.get(q)
            if not state:
                optimizer.state.pop(p, None)
                continue
            key = tuple(map(id, state.values()))
            if key == self._wrapped[i]:
                continue
            shown = optimizer.state[p]
            shown.clear()
            for name, value in state.items():
                if isinstance(value, Tensor) and value.shape == q.shape and name != "step":
                    value = DTensor.from_local(
                        value, p.device_mesh, p.placements, run_check=False,  # type: ignore[attr-defined]
                        shape=p.shape, stride=p.stride(),
                    )
                shown[name] = value
            self._wrapped[i] = key
        self._shown = [tuple(map(id, optimizer.state.get(p, {}).values())) for p in self.params]
