"""Evaluating a model trained by an optimizer with ``train()``/``eval()`` modes (Schedule-Free).

Any optimizer with callable ``train`` and ``eval`` methods counts: the
Schedule-Free classes of descentlab and of the ``schedulefree`` package, and
wrappers around them (``NonFiniteGuard(AdamWScheduleFree(...))``: the wrapper
base forwards the methods). For any other optimizer these helpers do nothing,
so training loops can call them unconditionally.

* :func:`start_training` — ``optimizer.train()`` before training steps;
* :func:`evaluation_mode` — a ``with`` block at the evaluation point ``x``,
  after which the training point ``y`` is back **bit for bit** (a plain
  ``eval()``/``train()`` pair recomputes ``y`` from ``x`` and ``z`` and moves it
  by rounding, so evaluating would change the training run);
* :func:`recompute_batchnorm` — BatchNorm running statistics at ``x``.

BatchNorm: the running statistics gathered in training describe activations
at ``y``; at ``x`` they are off, sometimes badly (the reference's README
advises recomputing them). :func:`recompute_batchnorm` moves the parameters
to ``x`` and runs :func:`torch.optim.swa_utils.update_bn` (reset the
statistics, then a cumulative average over a pass of the data in train mode).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch

__all__ = ["has_modes", "start_training", "evaluation_mode", "recompute_batchnorm"]


def has_modes(optimizer: Any) -> bool:
    """True if ``optimizer`` has ``train()`` and ``eval()`` methods (Schedule-Free style)."""
    return all(callable(getattr(optimizer, name, None)) for name in ("train", "eval"))


def _in_train_mode(optimizer: Any) -> bool:
    groups = getattr(optimizer, "param_groups", [])
    return bool(groups) and all(g.get("train_mode", False) for g in groups)


def start_training(optimizer: Any) -> None:
    """Call ``optimizer.train()`` if the optimizer has modes; otherwise do nothing."""
    if has_modes(optimizer):
        optimizer.train()


@contextlib.contextmanager
def evaluation_mode(optimizer: Any) -> Iterator[None]:
    """Within the block the parameters are at the evaluation point; afterwards as before.

    If the optimizer has modes and is in train mode: the parameters are
    copied, ``optimizer.eval()`` is called, and on leaving ``optimizer.train()``
    is called and the copies are written back, so training continues from
    exactly the point it left (one parameter-sized copy while inside). In eval
    mode, or for an optimizer without modes, the block just runs.
    """
    if not (has_modes(optimizer) and _in_train_mode(optimizer)):
        yield
        return
    params = [p for g in optimizer.param_groups for p in g["params"]]
    with torch.no_grad():
        saved = [p.detach().clone() for p in params]
    optimizer.eval()
    try:
        yield
    finally:
        optimizer.train()
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)


def recompute_batchnorm(
    model: torch.nn.Module,
    optimizer: Any,
    batches: Iterable[Any],
    device: torch.device | str | None = None,
) -> None:
    """Recompute ``model``'s BatchNorm statistics at the evaluation point; stay in eval mode.

    Calls ``optimizer.eval()`` (if it has modes), then
    ``torch.optim.swa_utils.update_bn(batches, model, device)``: each batch is
    an input tensor or a ``(inputs, targets, ...)`` sequence whose first entry
    is fed to the model. The model's own train/eval flag is left as it was.
    Call it after training (or before each evaluation, inside
    :func:`evaluation_mode` — the statistics then stay those of ``x``).
    """
    if has_modes(optimizer):
        optimizer.eval()
    torch.optim.swa_utils.update_bn(batches, model, device=device)
