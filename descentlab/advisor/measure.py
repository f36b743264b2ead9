"""The advisor's measurements: gradient noise, learning-rate range tests and short runs.

Every gradient evaluation is counted against one :class:`Budget` (a step of a
first-order optimizer is one evaluation; an L-BFGS step counts each closure
call of its line search). Evaluations of the metric on the validation set are
not optimizer steps and are not counted, as in ``descentlab compare``.

- :func:`gradient_noise` — at the initial point, ``k`` mini-batch gradients
  ``g_i`` without stepping; the noise-to-signal ratio
  ``ρ = tr Σ̂ / ‖Ĝ‖²`` with ``tr Σ̂ = Σ‖g_i − ḡ‖²/(k − 1)`` (the variance of
  one batch's gradient) and ``‖Ĝ‖² = ‖ḡ‖² − tr Σ̂ / k`` (unbiased), the
  batch-size form of McCandlish et al.'s (2018) simple noise scale
  ``B_simple = B·ρ``. ``ρ > 1``: one batch's gradient is mostly noise.
- :func:`is_quadratic` — whether the loss on fixed data is a quadratic function
  of the parameters (five forward passes along a random line; no gradient).
- :func:`range_test` — Smith's (2017) test on a fresh task: the learning rate
  grows geometrically from ``low`` to ``high`` over ``n`` steps; stop when the
  smoothed loss exceeds 4× its minimum or is not finite. The suggestion is
  fastai's "minimum/10" rule (:func:`descentlab.diagnostics.lr_finder.suggest_lrs`):
  a tenth of the rate at the lowest smoothed loss. (The "valley" rule, tried
  first, came out 10–300× below the best rates of ``benchmarks/problems_budget.py``
  for Adam on sweeps this short: the loss lags behind the rate.)
- :func:`short_run` — train a candidate from a fresh task for ``n``
  evaluations with its schedule compressed to ``n`` steps; record the loss,
  the gradient norm of every step and the metric ten times. Under the
  ``"warmup_average"`` schedule the rate stays constant after the warm-up and
  the metric is taken at the uniform average of the iterates after steps
  ``⌊n/2⌋ + 1, …, n`` (:func:`average_from`; tail averaging, Rakhlin, Shamir &
  Sridharan 2012; Jain et al. 2018), as ``torch.optim.swa_utils.AveragedModel``
  computes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.swa_utils import get_swa_multi_avg_fn

from descentlab.advisor.portfolio import Candidate, make_candidate_optimizer
from descentlab.advisor.setup import AdviseSetup
from descentlab.diagnostics.lr_finder import smooth_losses, suggest_lrs
from descentlab.schedule_free.evaluation import evaluation_mode, start_training

__all__ = ["Budget", "OutOfBudget", "NoiseProbe", "RangeTest", "RunResult", "TailAverage",
           "average_from", "is_quadratic",
           "gradient_noise", "range_test", "short_run", "schedule_for", "sharpness"]


class Budget:
    """Gradient evaluations allowed and spent, by phase."""

    def __init__(self, total: int, on_spend: Callable[[int], None] | None = None) -> None:
        self.total = int(total)
        self.by_phase: dict[str, int] = {}
        self._on_spend = on_spend

    @property
    def spent(self) -> int:
        """Evaluations spent so far."""
        return sum(self.by_phase.values())

    @property
    def left(self) -> int:
        """Evaluations not yet spent."""
        return self.total - self.spent

    def spend(self, phase: str, n: int = 1) -> None:
        """Count ``n`` evaluations of ``phase``."""
        self.by_phase[phase] = self.by_phase.get(phase, 0) + n
        if self._on_spend is not None:
            self._on_spend(n)


class OutOfBudget(Exception):
    """Raised by a metered closure that would exceed its run's allowance of evaluations."""


class _Metered:
    """Stands in for an optimizer in ``task.train_step``: counts and measures every evaluation.

    The closure handed to ``step`` is wrapped so that each call is counted,
    the first call's gradient norm is recorded, and gradients are clipped to
    ``clip`` (total 2-norm) when given, before the inner optimizer uses them.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, budget: Budget, phase: str,
                 clip: float | None = None, limit: int | None = None) -> None:
        self.optimizer = optimizer
        self.budget, self.phase, self.clip = budget, phase, clip
        self.limit = limit  # raise OutOfBudget rather than spend beyond this total
        self.grad_norms: list[float] = []
        self._params = [p for g in optimizer.param_groups for p in g["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], torch.Tensor]) -> Any:
        first = [True]

        def counted() -> torch.Tensor:
            if self.limit is not None and self.budget.spent >= self.limit:
                raise OutOfBudget
            loss = closure()
            self.budget.spend(self.phase)
            grads = [p.grad for p in self._params if p.grad is not None]
            if first[0]:
                first[0] = False
                norm = torch.linalg.vector_norm(torch.stack(
                    [torch.linalg.vector_norm(g) for g in grads])) if grads else torch.zeros(())
                self.grad_norms.append(float(norm))
            if self.clip is not None and grads:
                torch.nn.utils.clip_grad_norm_(self._params, self.clip)
            return loss

        return self.optimizer.step(counted)


class _Probe(torch.optim.Optimizer):
    """An optimizer that never moves: ``step`` evaluates the closure and keeps the gradient."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        super().__init__(params, {"lr": 0.0})
        self.gradients: list[torch.Tensor] = []

    def step(self, closure: Any = None) -> Any:  # noqa: D102
        with torch.enable_grad():
            loss = closure()
        params = [p for g in self.param_groups for p in g["params"]]
        self.gradients.append(torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).double()
            for p in params]))
        return loss


@dataclass
class NoiseProbe:
    """The gradient noise at the start (see the module docstring)."""

    batches: int
    ratio: float
    mean_norm: float


def gradient_noise(setup: AdviseSetup, batches: int, seed: int, budget: Budget) -> NoiseProbe:
    """Noise-to-signal ratio ``ρ`` of one batch's gradient at the initial point."""
    task = setup.build(seed)
    probe = _Probe(task.parameters())
    for _ in range(batches):
        task.train_step(probe)
        budget.spend("noise probe")
    g = torch.stack(probe.gradients)
    mean = g.mean(0)
    var = float(((g - mean) ** 2).sum(1).sum() / max(batches - 1, 1))
    signal = float(mean @ mean) - var / batches
    ratio = math.inf if signal <= 0 else var / signal
    if var == 0.0:
        ratio = 0.0
    return NoiseProbe(batches, ratio, float(mean.norm()))


def _loss_closure(task: Any) -> Callable[[], torch.Tensor] | None:
    """A loss on fixed data for Hessian-vector products, where the task lets one be formed.

    A user task, an analytic function and a supervised problem (its first 256
    training rows) do; others (the language model) return ``None``.
    """
    if hasattr(task, "curvature_loss"):
        return task.curvature_loss
    if hasattr(task, "_objective") and hasattr(task, "_w"):
        return lambda: task._objective(task._w)
    if all(hasattr(task, a) for a in ("_output", "loss_fn", "_x_train", "_y_train")):
        x, y = task._x_train[:256], task._y_train[:256]
        return lambda: task.loss_fn(task._output(x), y)
    return None


def is_quadratic(setup: AdviseSetup, seed: int, tolerance: float = 1e-3) -> bool | None:
    """Whether the loss on fixed data is quadratic in the parameters, measured at the start.

    Along a random direction ``v`` with ``‖v‖ = max(1, ‖θ₀‖)``, the parabola through
    ``f(θ₀ + tv)`` at ``t = −1, 0, 1`` must predict ``f`` at ``t = 2`` and ``3`` within
    ``tolerance`` relative to the largest of those values (``f`` cubic or steeper,
    or with kinks crossed, misses by far more; float32 rounding by far less). Forward
    passes only, no gradient: not counted against the budget, like the metric's
    evaluations. ``None`` where no loss on fixed data can be formed.
    """
    task = setup.build(seed)
    closure = _loss_closure(task)
    if closure is None:
        return None
    params = [p for p in task.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(seed)
    direction = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    start = [p.detach().clone() for p in params]
    norm = math.sqrt(sum(float((d**2).sum()) for d in direction)) or 1.0
    scale = max(1.0, math.sqrt(sum(float((p.double() ** 2).sum()) for p in start))) / norm
    values = []
    with torch.no_grad():
        for t in (-1.0, 0.0, 1.0, 2.0, 3.0):
            for p, p0, d in zip(params, start, direction, strict=True):
                p.copy_(p0 + (t * scale * d).to(p))  # its dtype and device
            values.append(float(closure()))
        for p, p0 in zip(params, start, strict=True):
            p.copy_(p0)
    if not all(math.isfinite(v) for v in values):
        return False
    fm, f0, f1, f2, f3 = values
    a, b = (f1 + fm - 2 * f0) / 2, (f1 - fm) / 2  # f(t) = a t² + b t + f0 through t = −1, 0, 1
    size = max(abs(v) for v in values) or 1.0
    return all(abs(a * t * t + b * t + f0 - ft) <= tolerance * size
               for t, ft in ((2.0, f2), (3.0, f3)))


def sharpness(setup: AdviseSetup, seed: int, budget: Budget, iterations: int = 6) -> float | None:
    """λ_max of the Hessian at the start by power iteration (``None`` where no loss on fixed
    data can be formed). Costs one gradient with its graph plus two per Hessian-vector
    product (double backward), all counted."""
    from descentlab.diagnostics.curvature import HessianOperator, power_iteration

    task = setup.build(seed)
    closure = _loss_closure(task)
    if closure is None:
        return None
    op = HessianOperator(closure, task.parameters())
    values, _ = power_iteration(op, 1, max_iter=iterations, tol=1e-3, seed=seed)
    budget.spend("curvature", 1 + 2 * op.calls)
    return abs(values[0]) if math.isfinite(values[0]) else None


@dataclass
class RangeTest:
    """One candidate's range test."""

    candidate: str
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    lr: float
    diverged_at: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {"candidate": self.candidate, "lrs": self.lrs, "losses": _finite(self.losses),
                "smoothed": _finite(self.smoothed), "lr": self.lr,
                "diverged_at": self.diverged_at}


def _finite(xs: list[float]) -> list[float | None]:
    return [x if math.isfinite(x) else None for x in xs]


def range_test(setup: AdviseSetup, cand: Candidate, steps: int, seed: int,
               budget: Budget) -> RangeTest:
    """The learning-rate range test of ``cand`` over ``steps`` steps (≥ 3)."""
    low, high = cand.lr_range or (cand.lr, cand.lr)
    task = setup.build(seed)
    opt = make_candidate_optimizer(cand, task.parameters(), low, getattr(task, "model", None))
    start_training(opt)
    ratios = [g["lr"] / opt.param_groups[0]["lr"] for g in opt.param_groups]
    meter = _Metered(opt, budget, "range tests")
    beta = max(0.5, 1.0 - 4.0 / steps)
    lrs: list[float] = []
    losses: list[float] = []
    best, diverged_at = math.inf, None
    for i in range(steps):
        lr = low * (high / low) ** (i / (steps - 1))
        for g, r in zip(opt.param_groups, ratios, strict=True):
            g["lr"] = lr * r
        loss = float(task.train_step(meter))
        lrs.append(lr)
        losses.append(loss)
        smoothed = smooth_losses([x if math.isfinite(x) else 1e300 for x in losses], beta)
        best = min(best, smoothed[-1])
        if not math.isfinite(loss) or (i > 0 and smoothed[-1] > 4 * best):
            diverged_at = lr
            break
    smoothed = smooth_losses([x if math.isfinite(x) else 1e300 for x in losses], beta)
    keep = len(lrs) - 1 if diverged_at is not None else len(lrs)
    if keep >= 3:
        lr = suggest_lrs(lrs[:keep], smoothed[:keep])["minimum/10"]
    else:
        lr = lrs[0]
    return RangeTest(cand.name, lrs, losses, [min(s, 1e300) for s in smoothed], lr, diverged_at)


def schedule_for(cand: Candidate, peak: float, steps: int, warmup_fraction: float) -> Any:
    """The candidate's learning-rate schedule over ``steps`` steps, or ``None``."""
    from descentlab.schedules import Warmup, warmup_cosine
    from descentlab.schedules.base import Constant

    if cand.schedule == "none" or steps < 2:
        return None
    warmup = min(max(1, math.ceil(warmup_fraction * steps)), steps - 1) if warmup_fraction > 0 \
        else 0
    if cand.schedule in ("warmup", "warmup_average"):
        return Warmup(Constant(peak), warmup) if warmup else None
    if warmup == 0:
        from descentlab.schedules import CosineDecay

        return CosineDecay(peak, steps)
    return warmup_cosine(peak, warmup, steps)


def average_from(steps: int) -> int:
    """Under ``"warmup_average"``, the iterates after steps ``average_from(steps) + 1, …,
    steps`` are averaged: the last half (at least the last one)."""
    return max(0, min(steps - 1, steps // 2))


class TailAverage:
    """The uniform running mean of the parameters after every step from ``start`` on, updated
    as ``torch.optim.swa_utils.AveragedModel`` updates its copy (the average the advice's
    ``code()`` computes)."""

    def __init__(self, params: list[torch.Tensor], start: int) -> None:
        self.params, self.start = params, start
        self.mean: list[torch.Tensor] | None = None
        self.count = 0
        self._update = get_swa_multi_avg_fn()

    def update(self, step: int) -> None:
        """Add the iterate after ``step`` steps (counted from 1) when ``step > start``."""
        if step <= self.start:
            return
        current = [p.detach() for p in self.params]
        if self.mean is None:
            self.mean = [p.clone() for p in current]
        else:
            self._update(self.mean, current, self.count)
        self.count += 1

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """A context in which the parameters hold the mean (unchanged before ``start``)."""
        if self.mean is None:
            yield
            return
        with torch.no_grad():
            kept = [p.detach().clone() for p in self.params]
            for p, m in zip(self.params, self.mean, strict=True):
                p.copy_(m)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, k in zip(self.params, kept, strict=True):
                    p.copy_(k)


@dataclass
class RunResult:
    """One short (or full) run of a candidate at one learning rate."""

    candidate: str
    lr: float
    evaluations: int
    steps: int
    final: float
    diverged: bool
    curve: list[tuple[int, float]]
    losses: list[float]
    grad_norms: list[float]
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {"candidate": self.candidate, "lr": self.lr, "evaluations": self.evaluations,
                "steps": self.steps, "final": self.final if math.isfinite(self.final) else None,
                "diverged": self.diverged,
                "curve": [[s, v if math.isfinite(v) else None] for s, v in self.curve]}


def short_run(setup: AdviseSetup, cand: Candidate, lr: float, evaluations: int, seed: int,
              budget: Budget, *, phase: str = "short runs", warmup_fraction: float = 0.02,
              clip: float | None = None, evals: int = 10) -> RunResult:
    """Train ``cand`` at peak ``lr`` for ``evaluations`` gradient evaluations (see module doc)."""
    task = setup.build(seed)
    opt = make_candidate_optimizer(cand, task.parameters(), lr, getattr(task, "model", None))
    start_training(opt)
    relative = len(opt.param_groups) > 1  # several groups (Muon): keep their ratios
    schedule = schedule_for(cand, 1.0 if relative else lr, evaluations, warmup_fraction)
    controller = None
    if schedule is not None:
        from descentlab.schedules import attach

        controller = attach(opt, lr=schedule, relative=relative)
    start = budget.spent
    meter = _Metered(opt, budget, phase, clip, limit=start + evaluations)
    params = [p for g in opt.param_groups for p in g["params"]]
    average = TailAverage(params, average_from(evaluations)) \
        if cand.schedule == "warmup_average" else None
    every = max(1, evaluations // evals)
    curve: list[tuple[int, float]] = []
    losses: list[float] = []
    step, diverged, metrics = 0, False, {}

    def evaluate() -> None:
        nonlocal diverged, metrics
        with evaluation_mode(opt):  # Schedule-Free: evaluate at the averaged point
            if average is None:
                metrics = task.evaluate()
            else:
                with average.swapped():  # tail averaging: at the mean of the iterates
                    metrics = task.evaluate()
        value = float(metrics.get(setup.metric, math.nan))
        curve.append((step, value))
        if not math.isfinite(value):
            diverged = True

    evaluate()
    while budget.spent - start < evaluations and not diverged:
        saved = [p.detach().clone() for p in params] if cand.lr_range is None else None
        try:
            loss = float(task.train_step(meter))
        except OutOfBudget:  # a line search ran out mid-step: back to the last full step
            with torch.no_grad():
                for p, v in zip(params, saved or [], strict=False):
                    p.copy_(v)
            evaluate()
            break
        step += 1
        losses.append(loss)
        if average is not None:
            average.update(step)
        if controller is not None:
            controller.step()
        if not math.isfinite(loss):
            diverged = True
        done = budget.spent - start >= evaluations
        if step % every == 0 or done or diverged:
            evaluate()
    final = setup.worst() if diverged else curve[-1][1]
    return RunResult(cand.name, lr, budget.spent - start, step, final, diverged, curve, losses,
                     meter.grad_norms, {k: float(v) for k, v in metrics.items()})
