"""Flat buffers: one contiguous tensor per (parameter group, device, dtype).

A :class:`Bucket` owns a 1-D buffer holding the values of several parameters
back to back, in *slots* that start at multiples of :data:`ALIGN` elements
(the padding between them is zero in every buffer). Each parameter's
``.data`` becomes a tensor over its slot, and so does its ``.grad`` when the
gradient can move (so ``backward`` accumulates straight into the flat
gradient). These per-slot tensors have storages of their own, exactly the
slot's size (:func:`~descentlab.engine.sharing.slot_tensor`): saving one
parameter, or a sub-module's ``state_dict()``, writes that slot only.

Nothing that another tensor can see is ever moved (the rule of
:mod:`descentlab.engine.sharing`): a gradient that is not private stays
``p.grad`` and is copied into the flat gradient at each step; a parameter
whose ``.data`` was replaced by a tensor that something else sees leaves its
slot for good (:meth:`Bucket.release`), and the slot stays a hole that no
update touches.

Complex parameters are stored as their real view (``torch.view_as_real``),
so a complex64 parameter shares a float32 bucket, exactly as the reference
engine treats each real and imaginary part as one coordinate.

The optimizer state of every parameter of a bucket (moment buffers, the
step counter and scalar bookkeeping such as NAdam's ``mu_product``) is flat
as well, and ``optimizer.state[p]`` holds per-slot tensors over it:
``state_dict()`` therefore stays per-parameter and torch's own saving and
loading work unchanged. For a tensor rule only the state entries shaped like
their parameter are flat (so same-shape neighbours are one strided batch,
:meth:`Bucket.batch_view`); entries of other shapes stay per parameter in
``optimizer.state[p]``.

Which parameters can be flattened (:func:`flattenable`): dense, strided,
contiguous, floating or complex tensors that are plain ``torch.Tensor`` /
``nn.Parameter`` (not DTensor or other subclasses), not on the ``meta``
device, not in shared memory, and owning their whole storage (no other
tensor's view). The others stay per-tensor (see :mod:`descentlab.engine.flat`).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import torch
from torch import Tensor

from descentlab.engine.host_scalars import HostScalars
from descentlab.engine.sharing import data_private, grad_private, slot_tensor
from descentlab.engine.slot_check import bump_versions, count_step, expected_keys, slots_hold
from descentlab.rules.base import TENSOR, Rule

__all__ = ["ALIGN", "Bucket", "flattenable", "real_dtype"]

#: Slot alignment in elements (64 bytes of float32; keeps complex views aligned).
ALIGN = 16

#: Stands in for a parameter that left its slot: no gradient, never stepped.
_GONE = torch.empty(0)


def real_dtype(t: Tensor) -> torch.dtype:
    """The dtype of the real view of ``t`` (float32 for complex64, itself for real dtypes)."""
    return t.real.dtype if t.is_complex() else t.dtype


def flattenable(p: Tensor) -> bool:
    """Whether ``p`` can become a view of a flat buffer (see the module docstring)."""
    if type(p) not in (torch.Tensor, torch.nn.Parameter) or type(p.data) is not torch.Tensor:
        return False  # DTensor, FSDP flat parameters and other subclasses
    if p.layout is not torch.strided or p.is_sparse or not p.is_contiguous():
        return False
    if not (p.is_floating_point() or p.is_complex()) or p.numel() == 0:
        return False
    if p.device.type == "meta" or p.is_shared():
        return False  # no memory to move / memory other processes see (Hogwild)
    nbytes = p.numel() * p.element_size()
    return p.storage_offset() == 0 and p.untyped_storage().nbytes() == nbytes


def _real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def _padded(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class Bucket:
    """Parameters of one group, device and (real) dtype in one flat buffer with flat state.

    Attributes:
        params: the parameters in slot order (``_GONE`` for a slot whose parameter left).
        offsets / sizes: each slot's start and real element count in the buffer.
        data / grad: the flat parameter and gradient buffers.
        param_views / grad_views: each parameter's per-slot tensors over them.
        gapless: no slot has been left (one update may cover the whole buffer).
        state: rule state key → flat buffer (elementwise state).
        scalar_state: rule scalar-state key → tensor with one entry per parameter.
        step: float32 step counters, one per parameter (``state[p]["step"]`` views them).
        steps: the same counters as Python ints (no device synchronisation needed).
        cohort: parameters with equal cohort ids have identical step counters and
            scalar state, so they can be updated by one call of the rule.
        has_state: whether ``optimizer.state[p]`` has been created.
        order: the slots in the order of the parameters in their group (the slots
            themselves may be in another, :func:`~descentlab.engine.layout.by_shape`);
            state is created in this order, so ``state_dict()`` lists it as torch.optim does.
    """

    def __init__(self, params: list[Tensor]) -> None:
        self.params = list(params)
        first = params[0]
        self.device, self.dtype = first.device, real_dtype(first)
        self.sizes = [_real(p.detach()).numel() for p in params]
        self.offsets: list[int] = []
        total = 0
        for n in self.sizes:
            self.offsets.append(total)
            total += _padded(n)
        self.total = total
        self.data = torch.zeros(total, dtype=self.dtype, device=self.device)
        self.grad = torch.zeros_like(self.data)
        self.shapes = [(p.shape, p.is_complex()) for p in params]
        self.param_views = [self._view(self.data, i) for i in range(len(params))]
        self.grad_views: list[Tensor | None] = [
            self._view(self.grad, i) for i in range(len(params))
        ]
        with torch.no_grad():
            for i, p in enumerate(params):
                self.param_views[i].copy_(p.detach())
                p.data = self.param_views[i]
        self.data_ptrs = [p.data_ptr() for p in params]
        self._keys: Tensor | None = None  # what :meth:`holds` compares with (made when needed)
        #: id() of the foreign gradient last copied in, and of one found held elsewhere
        self.foreign = [0] * len(params)
        self.held = [0] * len(params)
        self.gapless = True
        self.state: dict[str, Tensor] = {}
        self.scalar_state: dict[str, Tensor] = {}
        self.step = torch.zeros(len(params), dtype=torch.float32, device=self.device)
        #: where :func:`~descentlab.engine.slot_check.count_step` may count in C (CPU only)
        self._step_address = self.step.data_ptr() if self.step.device.type == "cpu" else None
        #: the runs' scalar state over host memory, and numpy views of :attr:`scalar_state`
        #: (CPU, float64; made at the first :meth:`scalars_at` that can use them)
        self._host_scalars: HostScalars | None = None
        self._scalar_arrays: dict[str, Any] = {}
        self.steps = [0] * len(params)
        self.cohort = [0] * len(params)
        self.has_state = [False] * len(params)
        self.order = list(range(len(params)))
        self._next_cohort = 1
        present = [i for i, p in enumerate(params) if p.grad is not None and not p.grad.is_sparse]
        if present:
            self.take_grads(present, move=True)

    def _view(self, flat: Tensor, i: int) -> Tensor:
        """Parameter ``i``'s slot of ``flat``, shaped like it, in a storage of its own."""
        (shape, complex_), start = self.shapes[i], self.offsets[i]
        piece = flat[start : start + self.sizes[i]]
        piece = torch.view_as_complex(piece.view(*shape, 2)) if complex_ else piece.view(shape)
        return slot_tensor(piece)

    def slot(self, flat: Tensor, i: int) -> Tensor:
        """Parameter ``i``'s slot of ``flat`` as a 1-D real tensor."""
        return flat[self.offsets[i] : self.offsets[i] + self.sizes[i]]

    def batch_view(self, flat: Tensor, start: int, stop: int) -> Tensor:
        """Slots ``start … stop-1`` of ``flat`` as one ``[B, *shape]`` tensor (same-shape slots).

        Neighbouring slots of one shape are equally spaced (each is padded
        to :data:`ALIGN`), so the batch is a strided view: no copy.
        """
        shape = self.shapes[start][0]
        inner = self.param_views[start].stride()  # a slot is contiguous in its own shape
        return flat.as_strided(
            (stop - start, *shape), (_padded(self.sizes[start]), *inner), self.offsets[start]
        )

    def fits(self, i: int, value: Tensor) -> bool:
        """Whether a state tensor has parameter ``i``'s (real) shape and dtype (fits a slot).

        (Low-precision state, :mod:`descentlab.rules.low_precision`, has another dtype.)
        """
        return (
            isinstance(value, Tensor)
            and real_dtype(value) == self.dtype
            and _real(value).shape == _real(self.param_views[i]).shape
        )

    def flat_entries(self, i: int, entries: dict[str, Any], rule: Rule) -> dict[str, Any]:
        """The state entries of parameter ``i`` kept in flat buffers (see the module docstring)."""
        if rule.kind != TENSOR:
            return entries
        return {k: v for k, v in entries.items() if self.fits(i, v) and not rule.keeps_layout(k)}

    def advance(self, start: int, stop: int) -> int:
        """Count one step for slots ``start … stop-1`` (which share a step), in their step
        counters and, as the update the caller makes next, in their parameters' version
        counters (:meth:`count_update`); return the new step."""
        step = self.steps[start] + 1
        self.steps[start:stop] = [step] * (stop - start)
        if start == 0 and stop == len(self.params):
            count_step(self.step, self._step_address)
        else:
            self.step[start:stop].add_(1)
        self.count_update(start, stop)
        return step

    def count_update(self, start: int, stop: int) -> None:
        """Count an in-place update of slots ``start … stop-1`` in their parameters' version
        counters (:func:`~descentlab.engine.slot_check.bump_versions`): the kernels write the
        slots, which autograd does not see. In a steady step this follows the slot check,
        which left the parameters' objects in the caches and prefetched the counters."""
        whole = start == 0 and stop == len(self.params)
        bump_versions(self.params if whole else self.params[start:stop])

    def stateful_runs(self) -> list[tuple[int, int]]:
        """Maximal runs ``(start, stop)`` of neighbouring slots whose parameters have state
        (a slot without state, or one a parameter left, ends a run)."""
        runs, start = [], None
        for i, p in enumerate(self.params):
            if self.has_state[i] and p is not _GONE:
                start = i if start is None else start
            elif start is not None:
                runs.append((start, i))
                start = None
        if start is not None:
            runs.append((start, len(self.params)))
        return runs

    def scalars_at(self, i: int) -> dict[str, Tensor]:
        """The scalar state of slot ``i`` as 0-dim tensors a run may update in place (copies:
        :meth:`keep_scalars` writes them back). On the CPU, float64, a :class:`HostScalars`
        reused from step to step, filled and read back without torch ops."""
        if not self.scalar_state:
            return {}
        host = self._host_scalars
        if host is None or len(host) != len(self.scalar_state):
            host = self._host_scalars = None
            if self.device.type == "cpu" and all(
                v.dtype == torch.float64 for v in self.scalar_state.values()
            ):
                host = self._host_scalars = HostScalars(self.scalar_state)
                self._scalar_arrays = {k: v.numpy() for k, v in self.scalar_state.items()}
        if host is None:
            return {k: v[i].clone() for k, v in self.scalar_state.items()}
        for key, values in self._scalar_arrays.items():
            host.set(key, float(values[i]))
        return host

    def keep_scalars(self, start: int, stop: int, scalars: dict[str, Tensor]) -> None:
        """Write a run's updated scalar state (from :meth:`scalars_at`) into slots
        ``start … stop-1``."""
        if scalars is self._host_scalars:
            for key, values in self._scalar_arrays.items():
                values[start:stop] = scalars.value(key)
            return
        for key, value in scalars.items():
            self.scalar_state[key][start:stop] = value

    def span(self, start: int, stop: int) -> tuple[int, int]:
        """Element range covering slots ``start … stop-1`` (with their padding)."""
        return self.offsets[start], self.offsets[stop - 1] + _padded(self.sizes[stop - 1])

    def holds(self) -> bool:
        """Whether every parameter's ``.data`` is still its slot and its ``.grad`` its flat view
        (one C++ pass, :mod:`descentlab.engine.slot_check`)."""
        if self._keys is None:
            self._keys = expected_keys(self.data_ptrs, self.grad_views)
        return slots_hold(self.params, self.data_ptrs, self.grad_views, self._keys)

    def steady(self) -> bool:
        """Whether one update may cover the whole buffer now, as at the last step: no slot
        left, every parameter has state, one cohort, and :meth:`holds`."""
        return (
            self.gapless
            and all(self.has_state)
            and self.cohort.count(self.cohort[0]) == len(self.cohort)  # (a C-speed check)
            and self.holds()
        )

    def new_cohort(self) -> int:
        """A cohort id not used before."""
        self._next_cohort += 1
        return self._next_cohort

    # -- gradients and parameter storage -------------------------------------------------

    def moved(self) -> list[int]:
        """Re-attach parameters whose ``.data`` was replaced; return those that cannot be.

        A replacement that nothing else sees (``p.data = new`` of the same
        dtype, shape and device) is copied into the slot and ``p.data`` is
        pointed back at it. One of another dtype, shape or device
        (``model.to(...)`` after the optimizer was built), or one that another
        tensor sees, means the parameter must leave the bucket: its index is
        returned (see :meth:`release`).
        """
        if list(map(Tensor.data_ptr, self.params)) == self.data_ptrs:
            return []
        leaving = []
        for i, p in enumerate(self.params):
            if p.data_ptr() == self.data_ptrs[i]:
                continue
            view = self.param_views[i]
            if (p.dtype, p.shape, p.device) != (view.dtype, view.shape, view.device):
                leaving.append(i)
            elif not data_private(p):
                leaving.append(i)
            else:
                with torch.no_grad():
                    view.copy_(p.detach())
                p.data = view
                self.data_ptrs[i] = p.data_ptr()
                self._keys = None
        return leaving

    def release(self, indices: list[int]) -> None:
        """Let parameters leave their slots; the slots become holes no update touches."""
        for i in indices:
            self.params[i] = self.param_views[i] = _GONE
            self.data_ptrs[i] = _GONE.data_ptr()
            self.grad_views[i] = None
            self._keys = None
            self.has_state[i] = True  # nothing to create for a hole
            self.cohort[i] = 0
            self.gapless = False

    def empty(self) -> bool:
        """Whether every parameter has left."""
        return all(p is _GONE for p in self.params)

    def take_grads(self, indices: list[int], move: bool = False) -> None:
        """Copy the gradients of parameters ``indices``, which are not our views, into the buffer.

        One ``.grad`` is pointed at its flat view only when nothing else sees
        the gradient (:func:`~descentlab.engine.sharing.grad_private`; the
        caller must hold no reference to it) and, unless ``move``, only once
        the same gradient comes back at the next step: a gradient made afresh
        for every step (``zero_grad()`` sets ``None``) is copied, and moving
        it would save nothing. A gradient found held elsewhere (a kept
        handle, a DDP bucket view) is not checked again. The moved ``.grad``
        continues the replaced gradient's ``_version``: copying into the slot
        is not a write to the gradient, so code that checks the version (as
        torch's own suite does) sees none.
        """
        grads = [self.params[i].grad for i in indices]
        torch._foreach_copy_([self.grad_views[i] for i in indices], grads)
        ids = list(map(id, grads))
        versions = [g._version for g in grads]
        del grads
        for i, seen, version in zip(indices, ids, versions, strict=True):
            if seen == self.held[i]:
                continue
            if not move and seen != self.foreign[i]:
                self.foreign[i] = seen  # first sighting
            elif grad_private(self.params[i]):
                view = self.grad_views[i]
                # The slot takes the gradient's place with its version counter: our copies
                # into it are not writes to the gradient (torch.optim never bumps it).
                torch._C._autograd._unsafe_set_version_counter((view,), (version,))
                self.params[i].grad = view
                self.foreign[i] = 0
            else:
                self.held[i] = seen

    # -- state ----------------------------------------------------------------------------

    def _ensure_buffers(self, keys: dict[str, Tensor], rule: Rule) -> None:
        for key, value in keys.items():
            if not isinstance(value, Tensor):
                continue
            if key in rule.scalar_state:
                if key not in self.scalar_state:
                    self.scalar_state[key] = torch.zeros(
                        len(self.params), dtype=value.dtype, device=self.device
                    )
            elif key not in self.state:
                self.state[key] = torch.zeros_like(self.data)

    def bind_state(
        self, i: int, state: MutableMapping[str, Any], keys: Any = None
    ) -> None:
        """Point ``state`` (``optimizer.state[p]``) at parameter ``i``'s views of the flat state.

        ``keys`` limits the flat entries bound (a tensor rule's); default: all of them.
        """
        state["step"] = self.step[i]
        for key in self.state if keys is None else keys:
            state[key] = self._view(self.state[key], i)
        for key in self.scalar_state:
            state[key] = self.scalar_state[key][i]
        self.has_state[i] = True

    def init_state(
        self, i: int, state: MutableMapping[str, Any], rule: Rule, flags: Any, h: Any, cohort: int
    ) -> None:
        """Create parameter ``i``'s state as the reference does (step 0, ``rule.init_state``)."""
        fresh = rule.init_state(self.params[i].detach(), flags, h)
        flat = self.flat_entries(i, fresh, rule)
        self._ensure_buffers(flat, rule)
        for key, value in flat.items():
            if key in self.scalar_state:
                self.scalar_state[key][i] = value
            else:
                self.slot(self.state[key], i).copy_(_real(value).reshape(-1))
        self.step[i] = 0
        self.steps[i] = 0
        self.cohort[i] = cohort
        state.clear()
        self.bind_state(i, state, None if flat is fresh else flat)
        state.update({k: v for k, v in fresh.items() if k not in flat})

    def adopt_state(self, state_of: MutableMapping[Tensor, Any], rule: Rule) -> None:
        """Copy whatever ``optimizer.state`` holds for our parameters into the flat state.

        Used when a bucket is built and after ``load_state_dict``: loaded
        tensors are copied into the flat buffers and replaced by views, step
        counters are mirrored on the host, and parameters whose step and
        scalar state agree with their predecessor's share its cohort.
        """
        previous: tuple[Any, ...] | None = None
        cohort = self.new_cohort()
        for i, p in enumerate(self.params):
            state = state_of.get(p) if p is not _GONE and p in state_of else None
            if not state:
                self.has_state[i] = p is _GONE
                self.cohort[i] = 0
                previous = None
                continue
            entries = {k: v for k, v in state.items() if k != "step"}
            flat = self.flat_entries(i, entries, rule)
            self._ensure_buffers(flat, rule)
            step = torch.as_tensor(state["step"]).detach().to(torch.float32)
            self.step[i] = step
            self.steps[i] = int(step.item())
            key_values = [self.steps[i]]
            for key, value in flat.items():
                if key in self.scalar_state:
                    self.scalar_state[key][i] = value.detach().to(self.scalar_state[key].dtype)
                    key_values.append(float(value))
                elif key in self.state:
                    self.slot(self.state[key], i).copy_(_real(value.detach()).reshape(-1))
            signature = tuple(key_values)
            if signature != previous:
                cohort = self.new_cohort()
                previous = signature
            self.cohort[i] = cohort
            self.bind_state(i, state, None if flat is entries else flat)
