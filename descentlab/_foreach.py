"""Batching tensors for ``torch._foreach_*`` ops (one device and dtype per call)."""

from __future__ import annotations

import torch

__all__ = ["by_device_and_dtype"]


def by_device_and_dtype(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """``tensors`` split into lists of one (device, dtype) each, in their order."""
    batches: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        batches.setdefault((t.device, t.dtype), []).append(t)
    return list(batches.values())
