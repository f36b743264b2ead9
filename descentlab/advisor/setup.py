"""What the advisor trains: a built-in problem or a user's model, loss and data, checked first.

An :class:`AdviseSetup` is the one interface the method needs: ``build(seed)``
returns a task with ``parameters()``, ``train_step(optimizer)`` and
``evaluate()`` (the :class:`~descentlab.problems.base.Task` protocol), plus the
user's step budget, the metric and its direction. :func:`from_problem` wraps a
registered problem; :func:`from_pieces` wraps ``model_fn, loss_fn, train_data,
val_data`` after checking, before any training, that the pieces fit together:
every bad piece raises one ``ValueError`` or ``TypeError`` naming the argument
and what was wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from descentlab import checks
from descentlab.problems.base import closure_step

__all__ = ["AdviseSetup", "UserTask", "METRICS", "from_pieces", "from_problem", "check_budget"]

METRICS = ("val_loss", "train_loss", "val_accuracy", "train_accuracy")
"""Metrics a user task can be advised on."""

FULL_BATCH_ROWS = 2048
"""With ``batch_size=None``, data of at most this many rows is used whole every step."""

DEFAULT_BATCH = 128
"""With ``batch_size=None`` and more rows than :data:`FULL_BATCH_ROWS`: this batch size."""


def check_budget(budget: Any) -> float:
    """``budget`` as a float in (0, 1]: the share of the user's steps the advice may spend."""
    return checks.check_probability(budget, "budget", include_zero=False)


@dataclass(frozen=True)
class AdviseSetup:
    """The training the advice is for.

    Attributes:
        name: shown in reports (a problem name or ``"user task"``).
        build: ``build(seed) -> task``; the task has ``parameters()``,
            ``train_step(optimizer) -> loss`` and ``evaluate() -> metrics``.
        steps: the user's full training budget in optimizer steps.
        metric: key of ``evaluate()`` that decides.
        higher_is_better: direction of ``metric``.
        full_batch: every step sees the same data (L-BFGS applies).
        num_params: trainable parameters (L-BFGS is only tried on small problems).
    """

    name: str
    build: Callable[[int], Any]
    steps: int
    metric: str
    higher_is_better: bool
    full_batch: bool
    num_params: int

    def worst(self) -> float:
        """The worst value of the metric (what a diverged run scores)."""
        return -math.inf if self.higher_is_better else math.inf


def from_problem(problem: Any, *, steps: int | None = None) -> AdviseSetup:
    """The setup of a registered problem (``steps`` defaults to the problem's budget)."""
    task = problem.build(0)
    full = problem.kind == "analytic" or problem.batch_size is None
    return AdviseSetup(
        name=problem.name,
        build=problem.build,
        steps=checks.check_positive_int(problem.steps if steps is None else steps, "steps"),
        metric=problem.metric,
        higher_is_better=bool(problem.higher_is_better),
        full_batch=full,
        num_params=sum(p.numel() for p in task.parameters()),
    )


def _as_tensors(data: Any, name: str) -> tuple[Tensor, Tensor]:
    """``(inputs, targets)`` from a pair of tensors or a map-style dataset of pairs."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
        isinstance(t, Tensor) for t in data
    ):
        x, y = data
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        if len(data) == 0:
            raise ValueError(f"{name} is empty")
        try:
            x, y = torch.utils.data.default_collate([data[i] for i in range(len(data))])
        except Exception as exc:
            raise TypeError(
                f"{name} must be (inputs, targets) tensors or a dataset of (input, target) "
                f"pairs; collating it failed: {exc}"
            ) from None
    else:
        raise TypeError(
            f"{name} must be (inputs, targets) tensors or a dataset of (input, target) pairs, "
            f"got {type(data).__name__}"
        )
    if x.dim() == 0 or y.dim() == 0 or len(x) != len(y):
        raise ValueError(
            f"{name}: inputs and targets must have the same number of rows, got shapes "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    if len(x) == 0:
        raise ValueError(f"{name} is empty")
    return x, y


class UserTask:
    """A user's model, loss and data as a task (mini-batches in a seeded epoch order).

    ``evaluate()`` gives ``train_loss`` and ``val_loss`` (means over the whole
    sets, computed in chunks of 1,024 rows) and, when asked for, accuracies:
    ``argmax`` of the output for class targets, ``output > 0`` for a single
    logit.
    """

    position = None

    def __init__(self, model: nn.Module, loss_fn: Callable[[Any, Any], Tensor],
                 train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor],
                 batch_size: int, seed: int, accuracy: bool) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self._train, self._val = train, val
        self._batch = min(batch_size, len(train[0]))
        self._gen = torch.Generator().manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.int64)
        self._accuracy = accuracy
        self._params = [p for p in model.parameters() if p.requires_grad]

    def parameters(self) -> list[nn.Parameter]:
        """The model's trainable parameters."""
        return self._params

    def _next_batch(self) -> Tensor:
        if len(self._order) < self._batch:
            n = len(self._train[0])
            self._order = torch.cat([self._order, torch.randperm(n, generator=self._gen)])
        batch, self._order = self._order[: self._batch], self._order[self._batch:]
        return batch

    def train_step(self, optimizer: torch.optim.Optimizer) -> float:
        """One ``optimizer.step(closure)`` on the next mini-batch; returns its loss."""
        self.model.train()
        x, y = self._train
        if self._batch == len(x):
            xb, yb = x, y
        else:
            idx = self._next_batch()
            xb, yb = x[idx], y[idx]
        return closure_step(optimizer, lambda: self.loss_fn(self.model(xb), yb))

    def curvature_loss(self) -> Tensor:
        """The loss on the first 256 training rows (fixed data, for Hessian-vector products)."""
        x, y = self._train
        return self.loss_fn(self.model(x[:256]), y[:256])

    def _metrics(self, x: Tensor, y: Tensor, prefix: str) -> dict[str, float]:
        total, correct = 0.0, 0.0
        for i in range(0, len(x), 1024):
            xb, yb = x[i:i + 1024], y[i:i + 1024]
            out = self.model(xb)
            total += float(self.loss_fn(out, yb)) * len(xb)
            if self._accuracy:
                correct += float(_correct(out, yb))
        metrics = {f"{prefix}_loss": total / len(x)}
        if self._accuracy:
            metrics[f"{prefix}_accuracy"] = correct / len(x)
        return metrics

    def evaluate(self) -> dict[str, float]:
        """Loss (and accuracy when the metric is one) on the whole train and validation sets."""
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return {**self._metrics(*self._train, "train"), **self._metrics(*self._val, "val")}
        finally:
            self.model.train(was)


def _correct(out: Tensor, y: Tensor) -> Tensor:
    if out.dim() == y.dim() + 1 and out.shape[-1] > 1:
        return (out.argmax(-1) == y).sum()
    return ((out.reshape(y.shape) > 0).to(y.dtype) == y).sum()


def from_pieces(
    model_fn: Callable[[int], nn.Module],
    loss_fn: Callable[[Any, Any], Tensor],
    train_data: Any,
    val_data: Any,
    *,
    steps: int,
    metric: str = "val_loss",
    higher_is_better: bool | None = None,
    batch_size: int | None = None,
) -> AdviseSetup:
    """Check a user's pieces and wrap them as a setup (see :func:`descentlab.advise`).

    The checks run the model and the loss on two rows of the training and the
    validation data, so a shape that does not fit fails here, before any
    training, with the shapes in the message.
    """
    steps = checks.check_positive_int(steps, "steps")
    if not callable(model_fn):
        raise TypeError(
            f"model_fn must be callable as model_fn(seed), got {type(model_fn).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(output, target), got "
                        f"{type(loss_fn).__name__}")
    metric = checks.check_known(metric, METRICS, "metric")
    if higher_is_better is None:
        higher_is_better = metric.endswith("accuracy")
    if batch_size is not None:
        batch_size = checks.check_positive_int(batch_size, "batch_size")
    train = _as_tensors(train_data, "train_data")
    val = _as_tensors(val_data, "val_data")
    try:
        model = model_fn(0)
    except Exception as exc:
        raise ValueError(f"model_fn(0) failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_fn(seed) must return an nn.Module, got {type(model).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model_fn(0) returned a model without trainable parameters")
    for name, (x, y) in (("train_data", train), ("val_data", val)):
        _check_fits(model, loss_fn, x, y, name, metric.endswith("accuracy"))
    rows = len(train[0])
    if batch_size is None:
        batch_size = rows if rows <= FULL_BATCH_ROWS else DEFAULT_BATCH
    accuracy = metric.endswith("accuracy")

    def build(seed: int) -> UserTask:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = model_fn(seed)
        return UserTask(net, loss_fn, train, val, batch_size, seed, accuracy)

    return AdviseSetup(
        name="user task", build=build, steps=steps, metric=metric,
        higher_is_better=bool(higher_is_better), full_batch=batch_size >= rows,
        num_params=sum(p.numel() for p in params),
    )


def _check_fits(model: nn.Module, loss_fn: Callable, x: Tensor, y: Tensor, name: str,
                accuracy: bool) -> None:
    xb, yb = x[:2], y[:2]
    try:
        out = model(xb)
    except Exception as exc:
        raise ValueError(
            f"{name}: inputs of shape {tuple(x.shape)} do not fit the model: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    try:
        loss = loss_fn(out, yb)
    except Exception as exc:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"{name}: targets of shape {tuple(y.shape)} do not fit the model's output of shape "
            f"{shape} in loss_fn: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        got = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn(output, target) must return a scalar tensor, got {got}")
    if not loss.requires_grad:
        raise ValueError("loss_fn(output, target) returned a loss without a gradient")
    if not math.isfinite(float(loss.detach())):
        raise ValueError(f"{name}: the loss of the untrained model is {float(loss.detach())}")
    if accuracy:
        try:
            _correct(out, yb)
        except Exception:
            raise ValueError(
                f"{name}: accuracy needs class scores (N, C) for class targets (N,) or one "
                f"logit per row; got output {tuple(out.shape)} and targets {tuple(yb.shape)}"
            ) from None
