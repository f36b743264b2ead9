"""Weight averaging (EMA, SWA) on top of ``torch.optim.swa_utils``.

torch already provides the machinery: ``AveragedModel`` keeps the averaged
copy, ``get_ema_multi_avg_fn(decay)`` gives an exponential moving average,
``SWALR`` anneals to the SWA learning rate and ``update_bn`` recomputes
batch-norm statistics. They work with descentlab's optimizers unchanged,
since they only touch the model. This module adds one thing torch lacks:
an EMA whose decay is a *schedule* of the number of updates, e.g. the
common warm-up ``decay_t = min(0.9999, (1 + t) / (10 + t))`` that keeps the
average from being dominated by the random initialisation early on (timm's
``ModelEmaV3(use_warmup=True)``, Karras et al.'s power EMA).

Usage with a descentlab optimizer::

    from torch.optim.swa_utils import AveragedModel, SWALR, update_bn
    ema = ema_model(model, decay=ema_warmup(0.999))     # or a plain float
    for x, y in loader:
        ...
        optimizer.step()
        ema.update_parameters(model)                    # after every step
    evaluate(ema.module)

    swa = AveragedModel(model)                          # SWA: equal weights
    # lr: a ScheduleController with Join([cosine, Constant(swa_lr)], [swa_start])
    # does what SWALR does, or use torch's SWALR directly.
    swa.update_parameters(model)                        # once per epoch after swa_start
    update_bn(loader, swa)                              # if the model has batch norm
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.swa_utils import AveragedModel

from descentlab.optim.validation import check_interval, check_nonnegative, check_positive
from descentlab.schedules.base import LambdaSchedule, Schedule, as_schedule

__all__ = ["scheduled_ema_multi_avg_fn", "ema_model", "ema_warmup"]

MultiAvgFn = Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor | int], None]


def ema_warmup(max_decay: float = 0.9999, offset: float = 10.0) -> LambdaSchedule:
    """EMA decay ``min(max_decay, (1 + t) / (offset + t))`` for update ``t = 0, 1, ...``.

    Early updates average fast (decay 0.1, 0.18, 0.25, ... for ``offset=10``),
    later ones approach ``max_decay``. This is the warm-up of TensorFlow's
    ``ExponentialMovingAverage(num_updates=...)`` and timm's ``ModelEmaV2``
    with warm-up.
    """
    max_decay = check_interval("max_decay", max_decay, 0.0, 1.0)
    offset = check_positive("offset", offset)
    if offset < 1.0:
        raise ValueError(f"offset must be >= 1 so the decay stays <= 1, got {offset!r}")
    return LambdaSchedule(lambda t: min(max_decay, (1.0 + t) / (offset + t)))


def scheduled_ema_multi_avg_fn(decay: Schedule | float) -> MultiAvgFn:
    r"""A ``multi_avg_fn`` for ``AveragedModel``: EMA with decay ``decay(t)``.

    ``AveragedModel`` copies the model on its first update; on the ``t``-th
    update after that (``t = 0, 1, ...``; ``n_averaged = t + 1``) this sets
    :math:`\bar\theta \leftarrow d_t \bar\theta + (1 - d_t)\theta` with
    :math:`d_t` = ``decay(t)`` in ``[0, 1]``. With a constant decay it is
    ``torch.optim.swa_utils.get_ema_multi_avg_fn(decay)``.
    """
    schedule = as_schedule(decay, "decay")

    def update(
        ema_params: list[torch.Tensor],
        params: list[torch.Tensor],
        num_averaged: torch.Tensor | int,
    ) -> None:
        t = int(num_averaged) - 1
        d = check_interval(f"decay at update {t}", schedule(max(t, 0)), 0.0, 1.0)
        if ema_params and torch.is_floating_point(ema_params[0]):
            torch._foreach_lerp_(ema_params, params, 1.0 - d)
        else:
            for p_ema, p in zip(ema_params, params, strict=True):
                p_ema.copy_(p_ema * d + p * (1.0 - d))

    return update


def ema_model(
    model: torch.nn.Module,
    decay: Schedule | float = 0.999,
    use_buffers: bool = True,
    device: torch.device | str | None = None,
) -> AveragedModel:
    """An ``AveragedModel`` holding an EMA of ``model`` with a constant or scheduled decay.

    ``use_buffers=True`` (default here; torch's default is ``False``) also
    averages buffers such as batch-norm running statistics, so the EMA
    model can be evaluated without ``update_bn``.
    """
    if not isinstance(decay, Schedule):
        check_nonnegative("decay", decay)
        check_interval("decay", decay, 0.0, 1.0)
    return AveragedModel(
        model, device=device, multi_avg_fn=scheduled_ema_multi_avg_fn(decay),
        use_buffers=use_buffers,
    )
