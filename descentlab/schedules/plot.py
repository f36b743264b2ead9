"""Draw schedules: every schedule in the package on one figure, or your own.

Uses matplotlib's object API (``matplotlib.figure.Figure``), so it neither
needs nor changes a pyplot backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from descentlab.optim.validation import check_int
from descentlab.schedules.base import Constant, Join, Product, Schedule
from descentlab.schedules.cycles import Cyclic, OneCycle, one_cycle_momentum
from descentlab.schedules.decay import (
    CosineDecay,
    CosineWarmRestarts,
    ExponentialDecay,
    InverseTimeDecay,
    LinearSchedule,
    MultiStepDecay,
    PolynomialDecay,
    StepDecay,
)
from descentlab.schedules.plateau import ReduceOnPlateau
from descentlab.schedules.warmup import Warmup, WarmupStableDecay, warmup_cosine

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["schedule_gallery", "plot_schedules", "plateau_demo"]

Panel = Mapping[str, Schedule | list[float]]


def plateau_demo(total_steps: int, eval_every: int = 25, seed: int = 0) -> dict[str, list[float]]:
    """A warm-up followed by :class:`ReduceOnPlateau`, driven by a synthetic validation loss.

    Returns the learning rate and the (rescaled) loss curve; the loss
    improves, stalls, improves a little after each reduction, and is
    observed every ``eval_every`` steps.
    """
    import random

    rng = random.Random(seed)
    warm = max(1, total_steps // 20)
    plateau = ReduceOnPlateau(1.0, factor=0.5, patience=2, threshold=1e-2, cooldown=1)
    sched = Warmup(plateau, warm)
    lrs, losses = [], []
    loss, level = 1.0, 0.3
    for t in range(total_steps):
        lr = sched(t)
        lrs.append(lr)
        # progress slows as the loss approaches a floor that drops when the lr drops
        floor = level * (0.5 + 0.5 * lr)
        loss = floor + (loss - floor) * (1 - 0.01 * lr) + 0.002 * rng.gauss(0.0, 1.0)
        losses.append(loss)
        if t % eval_every == eval_every - 1:
            sched.observe(loss, t)
    return {"lr (plateau-driven)": lrs, "val. loss": losses}


def schedule_gallery(total_steps: int = 1000) -> dict[str, Panel]:
    """One panel per schedule family, each with one or more labelled curves, peak value 1."""
    t = check_int("total_steps", total_steps, minimum=20)
    q = t // 10
    return {
        "constant / time-based 1/(1+kt)": {
            "Constant(1)": Constant(1.0),
            "InverseTimeDecay(k=0.01)": InverseTimeDecay(1.0, 10.0 / t),
        },
        "step / multi-step": {
            f"StepDecay({2 * q}, 0.5)": StepDecay(1.0, 2 * q, 0.5),
            "MultiStepDecay(0.3)": MultiStepDecay(1.0, [3 * q, 6 * q, 8 * q], 0.3),
        },
        "exponential": {
            "ExponentialDecay": ExponentialDecay(1.0, 0.01 ** (1 / t)),
            "staircase": ExponentialDecay(1.0, 0.01 ** (q / t), q, staircase=True),
        },
        "polynomial / linear": {
            "power 2": PolynomialDecay(1.0, t, 2.0),
            "power 0.5": PolynomialDecay(1.0, t, 0.5),
            "LinearSchedule": LinearSchedule(1.0, 0.1, t),
        },
        "cosine": {"CosineDecay": CosineDecay(1.0, t, 0.05)},
        "cosine, warm restarts (SGDR)": {
            "period_mult=2": CosineWarmRestarts(1.0, q, 2),
            "peak_decay=0.7": CosineWarmRestarts(1.0, 2 * q, peak_decay=0.7),
        },
        "warm-up in front": {
            "warmup_cosine": warmup_cosine(1.0, q, t),
            "Warmup(Exponential)": Warmup(ExponentialDecay(1.0, 0.02 ** (1 / t)), q),
        },
        "warmup-stable-decay (WSD)": {
            shape: WarmupStableDecay(1.0, t, q // 2, 2 * q, decay_shape=shape)
            for shape in ("linear", "cosine", "1-sqrt")
        },
        "one-cycle (+ momentum)": {
            "OneCycle": OneCycle(1.0, t),
            "three_phase, linear": OneCycle(1.0, t, anneal_strategy="linear", three_phase=True),
            "one_cycle_momentum": one_cycle_momentum(t),
        },
        "cyclic (CLR)": {
            "triangular": Cyclic(0.1, 1.0, q),
            "triangular2": Cyclic(0.1, 1.0, q, mode="triangular2"),
            "exp_range": Cyclic(0.1, 1.0, q, mode="exp_range", gamma=0.1 ** (1 / t)),
        },
        "composition: Join, Product": {
            "Join[linear, 1, step]": Join(
                [LinearSchedule(0.0, 1.0, q), 1.0, StepDecay(1.0, q, 0.6)], [q, 4 * q]
            ),
            "Product(cos, cyclic)": Product(CosineDecay(1.0, t), Cyclic(0.5, 1.0, q // 2)),
        },
        "reduce on plateau (after warm-up)": plateau_demo(t),
    }


def plot_schedules(
    panels: Mapping[str, Panel | Schedule] | None = None,
    total_steps: int = 1000,
    path: str | Path | None = None,
    ncols: int = 4,
    title: str | None = "descentlab schedules",
) -> Figure:
    """Plot schedules on one figure, one small panel each; save a PNG if ``path`` is given.

    ``panels`` maps a panel title to a schedule or to ``{label: schedule}``
    (a list of precomputed values also works); by default
    :func:`schedule_gallery` (every schedule in the package). Returns the
    matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    total_steps = check_int("total_steps", total_steps, minimum=2)
    ncols = check_int("ncols", ncols, minimum=1)
    if panels is None:
        panels = schedule_gallery(total_steps)
    if not panels:
        raise ValueError("panels is empty: nothing to plot")
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.0 * min(ncols, len(panels)), 2.9 * nrows), layout="constrained")
    axes = fig.subplots(nrows, min(ncols, len(panels)), squeeze=False)
    steps = list(range(total_steps))
    for ax, (name, panel) in zip(axes.flat, panels.items(), strict=False):
        curves: Mapping[str, Any] = {name: panel} if isinstance(panel, Schedule) else panel
        for i, (label, curve) in enumerate(curves.items()):
            ys = curve.values(total_steps) if isinstance(curve, Schedule) else list(curve)
            style = "--" if ("momentum" in label or "loss" in label) else "-"
            ax.plot(steps[: len(ys)], ys, style, lw=1.6, label=label, color=f"C{i}")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=13)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
    return fig
