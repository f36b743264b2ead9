r"""Gradient accumulation: one optimizer step from several micro-batches.

The gradient of a mean loss over a batch of ``N`` samples split into
micro-batches of sizes ``n_1 + ... + n_k = N`` is

.. math:: \nabla \frac{1}{N}\sum_{j=1}^{N} \ell_j
          = \sum_{i=1}^{k} \frac{n_i}{N}\, \nabla \bar\ell_i ,

where :math:`\bar\ell_i` is micro-batch ``i``'s mean loss. So each
micro-batch's loss is weighted by ``n_i / N`` before ``backward()`` (not by
``1 / k``, which is only right when all micro-batches have the same size).
For a sum loss the weights are 1. Layers whose output depends on the whole
batch (batch norm in training mode) make micro-batches differ from one
large batch whatever the weights; use group or layer norm, or accept the
difference.

:func:`accumulate_gradients` does the whole thing for a list of
micro-batches; :class:`~descentlab.wrappers.GradientAccumulator` (also
importable from here) fits a training loop that streams micro-batches from a
loader.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch

from descentlab.optim.validation import check_int
from descentlab.wrappers.accumulation import GradientAccumulator

__all__ = ["split_batch", "batch_size", "accumulate_gradients", "GradientAccumulator"]


def batch_size(batch: Any) -> int:
    """Number of samples in ``batch``: dim 0 of its first tensor (tensors, tuples, lists, dicts)."""
    if isinstance(batch, torch.Tensor):
        if batch.ndim == 0:
            raise ValueError("batch is a 0-dim tensor: it has no batch dimension")
        return int(batch.shape[0])
    items = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(items, Iterable) and not isinstance(items, (str, bytes)):
        for item in items:
            if isinstance(item, (torch.Tensor, Mapping, list, tuple)):
                return batch_size(item)
    raise TypeError(f"cannot find a tensor in the batch to size it, got {type(batch).__name__}")


def split_batch(batch: Any, micro_batch_size: int) -> list[Any]:
    """Split every tensor of ``batch`` along dim 0 into micro-batches of ``micro_batch_size``.

    Works on a tensor or a (nested) tuple/list/dict of tensors; non-tensor
    leaves are repeated in every micro-batch. The last micro-batch may be
    smaller. Views, not copies (``torch.split``).
    """
    micro_batch_size = check_int("micro_batch_size", micro_batch_size, minimum=1)
    n = batch_size(batch)
    count = -(-n // micro_batch_size)

    def split(x: Any) -> list[Any]:
        if isinstance(x, torch.Tensor):
            if x.ndim == 0 or x.shape[0] != n:
                raise ValueError(
                    f"every tensor in the batch must have {n} rows, got shape {tuple(x.shape)}"
                )
            return list(torch.split(x, micro_batch_size))
        if isinstance(x, Mapping):
            parts = {k: split(v) for k, v in x.items()}
            return [{k: parts[k][i] for k in parts} for i in range(count)]
        if isinstance(x, (tuple, list)):
            parts = [split(v) for v in x]
            return [type(x)(p[i] for p in parts) for i in range(count)]
        return [x] * count

    return split(batch)


def accumulate_gradients(
    loss_fn: Callable[[Any], torch.Tensor],
    micro_batches: Sequence[Any],
    *,
    reduction: Literal["mean", "sum"] = "mean",
    sizes: Sequence[int] | None = None,
    model: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Run ``backward()`` over micro-batches so the accumulated gradients equal one large batch's.

    Args:
        loss_fn: maps one micro-batch to a scalar loss, reduced over the
            micro-batch's samples with ``reduction``.
        micro_batches: the micro-batches, e.g. from :func:`split_batch`.
        reduction: ``"mean"`` weights micro-batch ``i`` by ``n_i / N``;
            ``"sum"`` by 1.
        sizes: the ``n_i``; by default :func:`batch_size` of each micro-batch.
        model: if it has ``no_sync()`` (``DistributedDataParallel``), every
            backward but the last runs inside it, so gradients are
            all-reduced once.

    Gradients are *added* to ``.grad``: call ``optimizer.zero_grad()``
    before. Returns the large-batch loss (detached). In float64 the
    gradients equal a single large-batch backward to rounding (summation
    order differs), tested to 1e-12.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    batches = list(micro_batches)
    if not batches:
        raise ValueError("micro_batches is empty")
    if sizes is None:
        sizes = [batch_size(b) for b in batches]
    elif len(sizes) != len(batches):
        raise ValueError(f"sizes has {len(sizes)} entries for {len(batches)} micro-batches")
    sizes = [check_int(f"sizes[{i}]", s, minimum=1) for i, s in enumerate(sizes)]
    total = sum(sizes)
    no_sync = getattr(model, "no_sync", None)
    loss_sum: torch.Tensor | None = None
    for i, (batch, n) in enumerate(zip(batches, sizes, strict=True)):
        weight = n / total if reduction == "mean" else 1.0
        last = i == len(batches) - 1
        ctx = no_sync() if (no_sync is not None and not last) else contextlib.nullcontext()
        with ctx:
            loss = loss_fn(batch)
            if loss.ndim != 0:
                raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
            (loss * weight).backward()
        part = loss.detach() * weight
        loss_sum = part if loss_sum is None else loss_sum + part
    assert loss_sum is not None
    return loss_sum
