"""Learning-rate range test (Smith 2017, "Cyclical Learning Rates"; fastai/Lightning ``lr_find``).

Train for a few steps while the learning rate grows exponentially from
``start_lr`` to ``end_lr``; record the loss, smooth it, stop when it
diverges, then put the model and the optimizer back exactly as they were.
The curve of loss against learning rate suggests a learning rate by
several rules:

* ``"steepest"`` — where the smoothed loss falls fastest per unit of
  ``log lr`` (the minimum of its numerical derivative; Lightning's default).
* ``"valley"`` — the middle (in ``log lr``) of the longest decreasing
  stretch of the smoothed curve (longest decreasing subsequence, so noise
  does not cut it short); a robust choice in the spirit of fastai's valley.
* ``"minimum/10"`` — the learning rate at the smallest smoothed loss divided
  by 10 (fastai's original rule of thumb).

Where tools differ: fastai smooths with a bias-corrected exponential moving
average (β = 0.98) and stops when the smoothed loss exceeds 4× its minimum,
as here; Lightning's default stop factor is 4 as well but it can also use a
linear sweep.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from descentlab.diagnostics._progress import progress_bar
from descentlab.optim.validation import check_int, check_interval, check_positive
from descentlab.schedule_free.evaluation import start_training

__all__ = ["LRRangeResult", "lr_range_test", "smooth_losses", "suggest_lrs"]


def smooth_losses(losses: list[float], beta: float = 0.98) -> list[float]:
    """Bias-corrected exponential moving average of ``losses``.

    ``a_t = β a_{t−1} + (1−β) x_t`` with ``a_0 = 0``, reported as ``s_t = a_t / (1 − β^t)``.
    """
    check_interval("beta", beta, 0.0, 1.0, high_closed=False)
    out, avg = [], 0.0
    for t, x in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * x
        out.append(avg / (1 - beta**t))
    return out


def _longest_decreasing(ys: list[float]) -> tuple[int, int]:
    n = len(ys)
    length, prev = [1] * n, [-1] * n
    for i in range(n):
        for j in range(i):
            if ys[j] > ys[i] and length[j] + 1 > length[i]:
                length[i], prev[i] = length[j] + 1, j
    end = max(range(n), key=length.__getitem__)
    start = end
    while prev[start] != -1:
        start = prev[start]
    return start, end


def suggest_lrs(
    lrs: list[float], smoothed: list[float], skip_start: int | None = None
) -> dict[str, float]:
    """Apply the three rules (see the module docstring) to a swept curve.

    ``skip_start`` points at the beginning are ignored by "steepest" (the
    smoothing has not settled there; default ``min(10, n // 10)``).
    """
    n = len(lrs)
    if n < 3:
        raise ValueError(f"need at least 3 points to suggest a learning rate, got {n}")
    logs = [math.log(x) for x in lrs]
    skip = min(10, n // 10) if skip_start is None else skip_start
    slopes = []
    for i in range(n):
        lo, hi = max(i - 1, 0), min(i + 1, n - 1)
        slopes.append((smoothed[hi] - smoothed[lo]) / (logs[hi] - logs[lo]))
    window = range(skip, n - 1) if n - 1 > skip else range(n)
    steep = min(window, key=slopes.__getitem__)
    best = min(range(n), key=smoothed.__getitem__)
    a, b = _longest_decreasing(smoothed[: best + 1])
    return {
        "steepest": lrs[steep],
        "valley": math.exp(0.5 * (logs[a] + logs[b])),
        "minimum/10": lrs[best] / 10,
    }


@dataclasses.dataclass
class LRRangeResult:
    """The swept curve, the suggestions and where the sweep stopped."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestions: dict[str, float]
    diverged: bool

    def suggestion(self, rule: str = "valley") -> float:
        """The learning rate suggested by ``rule`` ("steepest", "valley", "minimum/10")."""
        if rule not in self.suggestions:
            raise ValueError(f"rule must be one of {', '.join(self.suggestions)}, got {rule!r}")
        return self.suggestions[rule]

    def plot(self, ax: Any = None) -> Any:
        """Loss (raw and smoothed) against learning rate on a log axis, suggestions marked."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        raw = [x if math.isfinite(x) else float("nan") for x in self.losses]
        ax.plot(self.lrs, raw, color="0.75", lw=0.8, label="loss")
        ax.plot(self.lrs, self.smoothed, lw=1.5, label="smoothed")
        ax.set_xscale("log")
        for (rule, lr), c in zip(self.suggestions.items(), ("C1", "C2", "C3"), strict=False):
            ax.axvline(lr, color=c, ls="--", lw=1, label=f"{rule}: {lr:.2g}")
        finite = [s for s in self.smoothed if math.isfinite(s)]
        if finite:
            lo, hi = min(finite), min(max(finite), 4 * min(finite) + 1e-12)
            ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.1 * (hi - lo))
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
        return ax


def lr_range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Callable[[Any, Any], torch.Tensor],
    batches: Iterable[tuple[Any, Any]],
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smoothing: float = 0.98,
    diverge_factor: float = 4.0,
    progress: bool = False,
) -> LRRangeResult:
    """Run the range test; the model and optimizer are restored afterwards.

    Step ``i`` uses ``lr_i = start_lr · (end_lr/start_lr)^{i/(num_steps−1)}``
    in every parameter group (groups keep their ratios to the first group).
    The sweep stops when the loss is non-finite or the smoothed loss exceeds
    ``diverge_factor`` times its minimum. Parameters, buffers and the
    optimizer's state and hyperparameters are copied before and loaded back
    after (also on an exception). An optimizer with ``train()``/``eval()``
    modes (Schedule-Free) is put in train mode for the sweep (the losses are
    those at its training point ``y``) and comes back in the mode it had.

    Args:
        batches: iterable of ``(inputs, targets)``; cycled when shorter than
            ``num_steps``.
        smoothing: β of the bias-corrected moving average (0 disables).
    """
    check_positive("start_lr", start_lr)
    check_positive("end_lr", end_lr)
    if not end_lr > start_lr:
        raise ValueError(f"end_lr must be > start_lr, got end_lr={end_lr!r}, start_lr={start_lr!r}")
    check_int("num_steps", num_steps, minimum=3)
    check_interval("smoothing", smoothing, 0.0, 1.0, high_closed=False)
    check_interval("diverge_factor", diverge_factor, 1.0, math.inf, low_closed=False)
    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(optimizer.state_dict())
    base = [float(g["lr"]) for g in optimizer.param_groups]
    ratios = [b / base[0] if base[0] > 0 else 1.0 for b in base]
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    diverged = False
    avg, best = 0.0, math.inf
    source = iter(batches)
    was_training = model.training
    try:
        with progress_bar(progress, "learning-rate range test", num_steps) as advance:
            model.train()
            start_training(optimizer)  # Schedule-Free: steps need train mode (restored below)
            for i in range(num_steps):
                lr = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))
                for g, r in zip(optimizer.param_groups, ratios, strict=True):
                    g["lr"] = lr * r
                try:
                    x, y = next(source)
                except StopIteration:
                    source = iter(batches)
                    try:
                        x, y = next(source)
                    except StopIteration:
                        raise ValueError(
                            f"batches ran out after {i} steps; pass a re-iterable (a list or a "
                            "DataLoader) or at least num_steps batches"
                        ) from None
                loss = criterion(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                value = float(loss.detach())
                lrs.append(lr)
                losses.append(value)
                advance()
                if not math.isfinite(value):
                    smoothed.append(math.inf)
                    diverged = True
                    break
                avg = smoothing * avg + (1 - smoothing) * value
                s = avg / (1 - smoothing ** (i + 1))
                smoothed.append(s)
                best = min(best, s)
                if i > 0 and s > diverge_factor * best:
                    diverged = True
                    break
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(opt_state)
        model.train(was_training)
    keep = len(lrs) - 1 if diverged and len(lrs) > 3 else len(lrs)
    suggestions = suggest_lrs(lrs[:keep], smoothed[:keep]) if keep >= 3 else {}
    return LRRangeResult(lrs, losses, smoothed, suggestions, diverged)
