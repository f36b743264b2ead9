"""Trajectories of optimizers on the 2-D test functions.

:func:`run_trajectory` records where an optimizer goes on one of
:data:`~descentlab.problems.analytic.FUNCTIONS`, starting from the function's
canonical start (or a given point). :func:`tune_learning_rate` picks, from a
log-spaced grid, the learning rate whose path scores best (:func:`path_score`:
mean log-suboptimality along the path), so pictures compare methods at a good
setting rather than at an arbitrary one (a grid search: cheap for one 2-D
point, and exact to reproduce).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from descentlab.optim.presets import PRESETS, resolve
from descentlab.problems.analytic import FunctionTask, get_function
from descentlab.schedule_free.evaluation import evaluation_mode, start_training

__all__ = [
    "LR_GRID",
    "OptimizerFactory",
    "named_optimizer",
    "path_score",
    "run_trajectory",
    "tune_learning_rate",
]

#: ``factory(params) -> optimizer``.
OptimizerFactory = Callable[[list[Tensor]], torch.optim.Optimizer]

#: Default grid of :func:`tune_learning_rate`: 10⁻⁴ … 10 in steps of 10^½.
LR_GRID: tuple[float, ...] = tuple(10.0 ** (k / 2) for k in range(-8, 3))


def run_trajectory(
    function_name: str,
    optimizer_factory: OptimizerFactory,
    steps: int,
    start: Sequence[float] | Tensor | None = None,
) -> np.ndarray:
    """Positions visited by an optimizer on a 2-D function.

    Args:
        function_name: a key of :data:`~descentlab.problems.analytic.FUNCTIONS`.
        optimizer_factory: builds the optimizer from the parameter list.
        steps: number of optimizer steps (``>= 0``).
        start: starting point; defaults to the function's canonical ``start``.

    Returns:
        float64 array of shape ``(steps + 1, 2)``: row 0 is the start, row ``k``
        the point after ``k`` steps (for an optimizer with ``train()``/``eval()``
        modes, Schedule-Free, its evaluation point ``x``). Once a point is no
        longer finite (divergence), it and all later rows are ``nan``.
    """
    fn = get_function(function_name)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    point = torch.as_tensor(fn.start if start is None else start, dtype=torch.float32)
    if point.shape != (2,):
        raise ValueError(f"start must have two coordinates, got shape {tuple(point.shape)}")
    task = FunctionTask(fn, point, two_d=True)
    optimizer = optimizer_factory(task.parameters())
    start_training(optimizer)
    out = np.full((steps + 1, 2), np.nan)
    out[0] = task.position().numpy()
    for k in range(1, steps + 1):
        task.train_step(optimizer)
        with evaluation_mode(optimizer):
            now = task.position().numpy()
        if not np.isfinite(now).all():
            break
        out[k] = now
    return out


def named_optimizer(name: str, **hparams: Any) -> OptimizerFactory:
    """A factory for ``descentlab.make_optimizer(name, params, **hparams)``.

    ``name`` may also be a preset (:data:`descentlab.optim.presets.PRESETS`:
    ``gd``, ``momentum`` = SGD with momentum 0.9, ``nesterov``); explicit
    ``hparams`` override the preset's. The
    name and hyperparameters are checked at once (``ValueError`` listing the valid
    names, ``TypeError`` naming an unknown hyperparameter).
    """
    if not isinstance(name, str):
        raise TypeError(f"optimizer name must be a str, got {name!r}")
    name, hparams = resolve(name, **hparams)
    from descentlab import available_optimizers, make_optimizer

    if name.lower() not in available_optimizers():
        valid = ", ".join([*available_optimizers(), *PRESETS])
        raise ValueError(f"unknown optimizer {name!r}; valid names: {valid}")
    make_optimizer(name, [torch.nn.Parameter(torch.zeros(1))], **hparams)  # check now
    return lambda params: make_optimizer(name, params, **hparams)


def path_score(function_name: str, path: np.ndarray) -> float:
    """How well a path did, lower is better: the mean over its points of ``g(f)``.

    ``g(f) = log10(f − f_min + 10⁻¹²)`` when the minimum ``f_min`` is known (so
    each decade of progress counts the same, early or late), and ``asinh(f)``
    for functions unbounded below (log-like in ``|f|``, defined for negatives).
    A path that diverges (non-finite point or value) scores ``+inf``.
    """
    fn = get_function(function_name)
    if not np.isfinite(path).all():
        return math.inf
    with torch.no_grad():
        values = fn(torch.as_tensor(path, dtype=torch.float64)).numpy()
    if not np.isfinite(values).all():
        return math.inf
    if fn.min_value is None:
        return float(np.mean(np.arcsinh(values)))
    return float(np.mean(np.log10(np.maximum(values - fn.min_value, 0.0) + 1e-12)))


def tune_learning_rate(
    function_name: str,
    name: str,
    steps: int,
    grid: Sequence[float] = LR_GRID,
    **hparams: Any,
) -> float:
    """The learning rate in ``grid`` whose path has the best :func:`path_score`.

    Scoring the whole path rather than its last point prefers fast, steady
    descent over a large step that lands low by luck. Ties go to the smaller
    learning rate. ``hparams`` are passed to the optimizer.
    """
    if not grid:
        raise ValueError("grid must contain at least one learning rate")
    best_lr, best = None, math.inf
    for lr in sorted(grid):
        factory = named_optimizer(name, lr=lr, **hparams)
        score = path_score(function_name, run_trajectory(function_name, factory, steps))
        if score < best:
            best_lr, best = lr, score
    return min(grid) if best_lr is None else best_lr
