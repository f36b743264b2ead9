"""Run a training loop under a :class:`TrainingMonitor` and return its findings.

The small API behind ``descentlab diagnose`` and for users' own scripts::

    from descentlab.diagnostics.run import diagnose
    monitor = diagnose(model, optimizer, nn.CrossEntropyLoss(), train_batches,
                       steps=500, validation=(x_val, y_val), curvature=True)
    print(monitor.summary())
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from descentlab import checks
from descentlab.diagnostics._progress import progress_bar
from descentlab.diagnostics.findings import Severity
from descentlab.diagnostics.monitor import DEFAULT_INTERVAL, TrainingMonitor
from descentlab.optim.validation import check_int
from descentlab.schedule_free.evaluation import evaluation_mode, start_training

__all__ = ["DiagnoseProblem", "diagnose", "make_optimizer"]


@dataclasses.dataclass
class DiagnoseProblem:
    """What ``descentlab diagnose --problem file.py:function`` expects ``function()`` to return.

    Attributes:
        model: the network.
        criterion: ``criterion(model(inputs), targets) -> loss``.
        batches: an iterable of ``(inputs, targets)`` (cycled if it ends).
        validation: optional ``(inputs, targets)`` evaluated every
            ``validate_every`` steps.
    """

    model: nn.Module
    criterion: Callable[[Any, Any], torch.Tensor]
    batches: Iterable[tuple[Any, Any]]
    validation: tuple[Any, Any] | None = None


def _torch_classes() -> dict[str, type]:
    return {
        k.lower(): v
        for k, v in vars(torch.optim).items()
        if isinstance(v, type)
        and issubclass(v, torch.optim.Optimizer)
        and v is not torch.optim.Optimizer
    }


def optimizer_names() -> list[str]:
    """Names :func:`make_optimizer` accepts (lower case): descentlab's, then torch.optim's."""
    import descentlab

    known = list(descentlab.available_optimizers())
    return known + sorted(set(_torch_classes()) - set(known))


def make_optimizer(name: str, params: Iterable[Any], **hparams: Any) -> torch.optim.Optimizer:
    """An optimizer by name: ``descentlab.make_optimizer`` when it knows it, else ``torch.optim``.

    Names are matched case-insensitively (``"sgd"``, ``"Adam"``, ``"lbfgs"``).
    """
    import descentlab

    params = list(params)
    if name.lower() in descentlab.available_optimizers():
        return descentlab.make_optimizer(name.lower(), params, **hparams)
    classes = _torch_classes()
    if name.lower() not in classes:
        names = optimizer_names()
        raise ValueError(
            f"optimizer must be one of {', '.join(names)}; {checks.suggestion(name, names)}"
            f"got {name!r}"
        )
    return classes[name.lower()](params, **hparams)


def _cycle(batches: Iterable[Any]) -> Iterable[Any]:
    if iter(batches) is batches:  # a one-shot iterator/generator: consume as is
        return batches
    return itertools.cycle(batches) if isinstance(batches, (list, tuple)) else _relist(batches)


def _relist(batches: Iterable[Any]) -> Iterable[Any]:
    while True:
        yield from batches


def diagnose(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Callable[[Any, Any], torch.Tensor],
    batches: Iterable[tuple[Any, Any]],
    *,
    steps: int,
    validation: tuple[Any, Any] | None = None,
    validate_every: int = 50,
    interval: int = DEFAULT_INTERVAL,
    curvature: bool = False,
    stop_on_error: bool = True,
    progress: bool = False,
    monitor: TrainingMonitor | None = None,
) -> TrainingMonitor:
    """Train for ``steps`` steps under a monitor; return the monitor (findings, history).

    Args:
        model, optimizer, criterion: as in any training loop.
        batches: iterable of ``(inputs, targets)``; lists and re-iterable
            loaders are cycled, generators consumed.
        steps: optimizer steps to take.
        validation: ``(inputs, targets)`` evaluated under ``no_grad`` every
            ``validate_every`` steps and at the end (feeds the overfitting
            and plateau detectors). An optimizer with ``train()``/``eval()``
            modes (Schedule-Free) is evaluated at its evaluation point
            (:func:`~descentlab.schedule_free.evaluation.evaluation_mode`) and
            trained in train mode.
        interval: the monitor's measurement interval.
        curvature: at the end, check the Hessian of the first batch's loss for
            a saddle point and the edge of stability (Lanczos; a few dozen
            Hessian-vector products).
        stop_on_error: stop as soon as an error finding (non-finite values,
            divergence) is made.
        progress: show a rich progress bar.
        monitor: use this monitor instead of creating one.
    """
    check_int("steps", steps, minimum=1)
    check_int("validate_every", validate_every, minimum=1)
    mon = monitor or TrainingMonitor(model, optimizer, interval=interval)
    first: tuple[Any, Any] | None = None
    it = iter(_cycle(batches))

    def validate() -> None:
        if validation is not None:
            was = model.training
            model.eval()
            with torch.no_grad(), evaluation_mode(optimizer):
                mon.record_validation(criterion(model(validation[0]), validation[1]))
            model.train(was)

    start_training(optimizer)
    with progress_bar(progress, "training under the monitor", steps) as advance:
        for step in range(steps):
            try:
                inputs, targets = next(it)
            except StopIteration:
                break
            if first is None:
                first = (inputs, targets)
            model.train()
            loss = criterion(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            mon.record_loss(loss)
            if (step + 1) % validate_every == 0:
                validate()
            advance()
            if stop_on_error and mon.worst() is Severity.ERROR:
                break
        if validation is not None and (
            not mon.history.val_steps or mon.history.val_steps[-1] != mon.step
        ):
            validate()
        if curvature and first is not None and mon.worst() is not Severity.ERROR:
            x, y = first
            mon.check_curvature(lambda: criterion(model(x), y))
    return mon
