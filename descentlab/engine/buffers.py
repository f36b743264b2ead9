"""Flat buffers: one contiguous tensor per (parameter group, device, dtype).

A :class:`Bucket` owns a 1-D buffer holding the values of several parameters
back to back; each parameter's ``.data`` becomes a view of its slot, and so
does its ``.grad`` (so ``backward`` accumulates straight into the flat
gradient while ``.grad`` is kept). Slots start at multiples of
:data:`ALIGN` elements; the padding between them is zero in every buffer.

Complex parameters are stored as their real view (``torch.view_as_real``),
so a complex64 parameter shares a float32 bucket, exactly as the reference
engine treats each real and imaginary part as one coordinate.

The optimizer state of every parameter of a bucket (moment buffers, the
step counter and scalar bookkeeping such as NAdam's ``mu_product``) is flat
as well, and ``optimizer.state[p]`` holds *views* of it: ``state_dict()``
therefore stays per-parameter and torch's own saving and loading work
unchanged.

Which parameters can be flattened (:func:`flattenable`): dense, strided,
contiguous, floating or complex tensors that are plain ``torch.Tensor`` /
``nn.Parameter`` (not DTensor or other subclasses) and own their whole
storage (no other tensor's view, no storage shared with another
parameter). The others stay per-tensor (see :mod:`descentlab.engine.flat`).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import torch
from torch import Tensor

from descentlab.rules.base import Rule

__all__ = ["ALIGN", "Bucket", "flattenable", "real_dtype"]

#: Slot alignment in elements (64 bytes of float32; keeps complex views aligned).
ALIGN = 16


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
    nbytes = p.numel() * p.element_size()
    return p.storage_offset() == 0 and p.untyped_storage().nbytes() == nbytes


def _real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def _padded(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class Bucket:
    """Parameters of one group, device and (real) dtype in one flat buffer with flat state.

    Attributes:
        params: the parameters, in group order.
        offsets / sizes: each slot's start and real element count in the buffer.
        data / grad: the flat parameter and gradient buffers.
        state: rule state key → flat buffer (elementwise state).
        scalar_state: rule scalar-state key → tensor with one entry per parameter.
        step: float32 step counters, one per parameter (``state[p]["step"]`` views them).
        steps: the same counters as Python ints (no device synchronisation needed).
        cohort: parameters with equal cohort ids have identical step counters and
            scalar state, so they can be updated by one call of the rule.
        has_state: whether ``optimizer.state[p]`` has been created.
    """

    def __init__(self, params: list[Tensor]) -> None:
        self.params = params
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
        self.param_views = [self._view(self.data, i) for i in range(len(params))]
        self.grad_views = [self._view(self.grad, i) for i in range(len(params))]
        with torch.no_grad():
            for i, p in enumerate(params):
                self.param_views[i].copy_(p.detach())
                p.data = self.param_views[i]
        self.data_ptrs = [p.data_ptr() for p in params]
        self.state: dict[str, Tensor] = {}
        self.scalar_state: dict[str, Tensor] = {}
        self.step = torch.zeros(len(params), dtype=torch.float32, device=self.device)
        self.steps = [0] * len(params)
        self.cohort = [0] * len(params)
        self.has_state = [False] * len(params)
        self._next_cohort = 1

    def _view(self, flat: Tensor, i: int) -> Tensor:
        """Parameter ``i``'s slot of ``flat``, shaped (and typed) like the parameter."""
        p, start = self.params[i], self.offsets[i]
        piece = flat[start : start + self.sizes[i]]
        if p.is_complex():
            return torch.view_as_complex(piece.view(*p.shape, 2))
        return piece.view(p.shape)

    def slot(self, flat: Tensor, i: int) -> Tensor:
        """Parameter ``i``'s slot of ``flat`` as a 1-D real tensor."""
        return flat[self.offsets[i] : self.offsets[i] + self.sizes[i]]

    def span(self, start: int, stop: int) -> tuple[int, int]:
        """Element range covering parameters ``start … stop-1`` (with their padding)."""
        end = self.offsets[stop] if stop < len(self.params) else self.total
        return self.offsets[start], end

    def new_cohort(self) -> int:
        """A cohort id not used before."""
        self._next_cohort += 1
        return self._next_cohort

    # -- gradients and parameter storage -------------------------------------------------

    def attached(self) -> bool:
        """Re-attach parameters whose ``.data`` was replaced; False if one no longer fits its slot.

        A replacement of the same dtype, shape and device (``p.data = new``)
        is copied into the slot and ``p.data`` pointed back at the view; one
        that changed dtype, shape or device (``model.to(...)`` after the
        optimizer was built) means the bucket must be rebuilt.
        """
        if list(map(Tensor.data_ptr, self.params)) == self.data_ptrs:
            return True
        for i, p in enumerate(self.params):
            if p.data_ptr() == self.data_ptrs[i]:
                continue
            view = self.param_views[i]
            if (p.dtype, p.shape, p.device) != (view.dtype, view.shape, view.device):
                return False
            with torch.no_grad():
                view.copy_(p.detach())
            p.data = view
            self.data_ptrs[i] = p.data_ptr()
        return True

    def adopt_grad(self, i: int, grad: Tensor) -> None:
        """Copy a gradient that is not our view into the flat buffer and make ``.grad`` the view."""
        if grad.is_sparse:
            raise RuntimeError(
                f"sparse gradients are not supported (param of shape {tuple(grad.shape)})"
            )
        self.grad_views[i].copy_(grad)
        self.params[i].grad = self.grad_views[i]

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

    def bind_state(self, i: int, state: MutableMapping[str, Any]) -> None:
        """Point ``state`` (``optimizer.state[p]``) at parameter ``i``'s views of the flat state."""
        state["step"] = self.step[i]
        for key in self.state:
            state[key] = self._view(self.state[key], i)
        for key in self.scalar_state:
            state[key] = self.scalar_state[key][i]
        self.has_state[i] = True

    def init_state(
        self, i: int, state: MutableMapping[str, Any], rule: Rule, flags: Any, h: Any, cohort: int
    ) -> None:
        """Create parameter ``i``'s state as the reference does (step 0, ``rule.init_state``)."""
        fresh = rule.init_state(self.params[i].detach(), flags, h)
        self._ensure_buffers(fresh, rule)
        for key, value in fresh.items():
            if key in self.scalar_state:
                self.scalar_state[key][i] = value
            else:
                self.slot(self.state[key], i).copy_(_real(value).reshape(-1))
        self.step[i] = 0
        self.steps[i] = 0
        self.cohort[i] = cohort
        state.clear()
        self.bind_state(i, state)

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
            state = state_of.get(p) if p in state_of else None
            if not state:
                self.has_state[i] = False
                self.cohort[i] = 0
                previous = None
                continue
            self._ensure_buffers({k: v for k, v in state.items() if k != "step"}, rule)
            step = torch.as_tensor(state["step"]).detach().to(torch.float32)
            self.step[i] = step
            self.steps[i] = int(step.item())
            key_values = [self.steps[i]]
            for key, value in state.items():
                if key == "step":
                    continue
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
            self.bind_state(i, state)
