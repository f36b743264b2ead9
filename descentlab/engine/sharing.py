"""Who else can see a tensor: the rule that lets flat buffers behave like torch.optim.

The flat engines move parameters, gradients and state into contiguous
buffers. torch.optim never moves anything, so code written for it may keep
handles: ``g = p.grad`` kept across steps, ``w = layer.weight.detach()``, a
``state_dict()`` held in memory, a DDP bucket that ``.grad`` is a view of, a
second optimizer over the same parameter. Moving a tensor that such a handle
sees would silently cut the handle off. The engines therefore follow one rule:

    **a tensor is moved only when nothing but its owner can see it.**

"Seeing" is counted, not guessed:

* a parameter's values are private when no other tensor uses its storage
  (:func:`data_private`: the storage's reference count, and not in shared
  memory, where other processes may see it);
* a gradient is private when, besides ``p.grad``, no Python name, container,
  weak reference, C++ owner or view holds it (:func:`grad_private`: the Python
  reference count, the tensor's and its storage's use counts), and it carries
  no autograd graph.

The baselines of these counts are measured once, at import, on fresh tensors
through the same functions, so they hold for the running Python and torch.

Each parameter moved into a buffer gets tensors with storages of their own
that alias its slot (:func:`slot_tensor`, through DLPack): ``torch.save`` of a
parameter, of a sub-module's ``state_dict()`` or of one state tensor writes
that slot only, not the whole buffer, and a deep copy of a model gives
independent parameters.
"""

from __future__ import annotations

import sys
import warnings
import weakref

import torch
from torch import Tensor
from torch.utils.dlpack import from_dlpack, to_dlpack

__all__ = ["slot_tensor", "data_private", "grad_private"]


def _storage_refs(t: Tensor) -> int:
    """How many owners ``t``'s storage has (tensors sharing it, Python storage objects)."""
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


def _grad_refs(param: Tensor) -> tuple[int, int, int]:
    """(Python references, tensor owners, storage owners) of ``param.grad``, seen from here."""
    grad = param.grad
    return sys.getrefcount(grad), grad._use_count(), _storage_refs(grad)


def _baselines() -> tuple[int, tuple[int, int, int]]:
    fresh = torch.zeros(2)
    param = torch.nn.Parameter(torch.zeros(2))
    param.grad = torch.zeros(2)
    return _storage_refs(fresh), _grad_refs(param)


_STORAGE_BASE, _GRAD_BASE = _baselines()
_warned_dlpack = False


def data_private(t: Tensor) -> bool:
    """Whether ``t``'s memory is seen by no other tensor (so moving ``t.data`` is invisible)."""
    return _storage_refs(t) <= _STORAGE_BASE and not t.is_shared()


def grad_private(param: Tensor, held: int = 0) -> bool:
    """Whether ``param.grad`` is seen by nothing but ``param`` (see the module docstring).

    ``held`` is the number of references the caller itself holds to the
    gradient (e.g. 1 while it is in a list of gradients).
    """
    grad = param.grad
    if grad is None or grad.requires_grad or grad.is_shared() or weakref.getweakrefcount(grad):
        return False
    del grad
    python, owners, storage = _grad_refs(param)
    base_python, base_owners, base_storage = _GRAD_BASE
    return python <= base_python + held and owners <= base_owners and storage <= base_storage


def slot_tensor(piece: Tensor) -> Tensor:
    """A tensor over ``piece``'s memory whose storage is exactly ``piece``'s bytes.

    The new storage keeps the buffer ``piece`` belongs to alive. Where DLPack
    cannot export ``piece`` (a device or dtype without DLPack support), the
    plain view is returned and a warning says once that saving one such tensor
    writes its whole buffer.
    """
    try:
        return from_dlpack(to_dlpack(piece))
    except (BufferError, RuntimeError, TypeError) as exc:
        global _warned_dlpack
        if not _warned_dlpack:
            _warned_dlpack = True
            warnings.warn(
                f"descentlab: parameters on {piece.device} ({piece.dtype}) are views of one flat "
                f"buffer ({exc}); torch.save of a parameter or a sub-module's state_dict() "
                "writes the whole buffer (clone() before saving, or use engine='reference')",
                RuntimeWarning,
                stacklevel=2,
            )
        return piece
