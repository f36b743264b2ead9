"""Analytic test functions: the landscapes of the seed articles and the classic benchmarks.

Two-dimensional functions live in :data:`FUNCTIONS` (formula, plotting bounds,
canonical start, known minima) and are used for contour plots and trajectories;
each also is a registered :class:`~descentlab.problems.base.Problem`. One more
problem, ``noisy_quadratic``, is n-dimensional with stochastic gradients.

======================  ==========================================  =====================
name                    f(x, y)                                      minimum
======================  ==========================================  =====================
square                  x² + y² (the seeds' x², in two variables)    0 at (0, 0)
ill_conditioned_...     0.1·x² + 2·y² (condition number 20)          0 at (0, 0)
saddle                  x² − y²                                      none (saddle at 0)
monkey_saddle           x³ − 3·x·y²                                  none (saddle at 0)
rosenbrock              (1 − x)² + 100·(y − x²)²                     0 at (1, 1)
rastrigin               20 + Σ (t² − 10·cos 2πt)                     0 at (0, 0)
beale                   Σᵢ (cᵢ − x + x·yⁱ)², c = 1.5, 2.25, 2.625    0 at (3, 0.5)
himmelblau              (x² + y − 11)² + (x + y² − 7)²               0 at four points
======================  ==========================================  =====================

The saddles are unbounded below: their problems ask the optimizer to *escape*
(reach ``f <= -1``) from a start just off the saddle's stable axis ``y = 0``
(at ``y = 0.05``). Exactly on that axis the gradient never leaves it and
gradient descent converges to the saddle point; the small offset plays the
role of the perturbations that seed article 001 lists among the ways out of a
saddle. After escaping, a run keeps descending and may reach ``-inf``.

For these problems ``seed`` perturbs the start by ``jitter · N(0, I)``; the
trajectory helpers use the exact canonical start.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from descentlab.problems.base import Problem, closure_step
from descentlab.problems.registry import register

__all__ = ["FUNCTIONS", "Function2D", "FunctionTask", "NoisyQuadratic", "get_function"]


@dataclass(frozen=True)
class Function2D:
    """A two-variable test function with what is needed to plot and start it.

    Attributes:
        name: key in :data:`FUNCTIONS`.
        formula: the formula in plain text, e.g. ``"x² − y²"``.
        f: ``f(x, y)`` on tensors of any (broadcastable) shape.
        bounds: ``((x_min, x_max), (y_min, y_max))`` for contour plots.
        start: canonical starting point.
        minima: known global minimisers (empty if unbounded below).
        min_value: the global minimum value, ``None`` if unbounded below.
        log_scale: draw contours on a log scale (steep valleys).
    """

    name: str
    formula: str
    f: Callable[[Tensor, Tensor], Tensor]
    bounds: tuple[tuple[float, float], tuple[float, float]]
    start: tuple[float, float]
    minima: tuple[tuple[float, float], ...]
    min_value: float | None
    log_scale: bool = False

    def __call__(self, xy: Tensor) -> Tensor:
        """Evaluate at a point ``xy`` of shape ``(..., 2)``."""
        return self.f(xy[..., 0], xy[..., 1])


def _square(x: Tensor, y: Tensor) -> Tensor:
    return x**2 + y**2


def _ill_conditioned(x: Tensor, y: Tensor) -> Tensor:
    return 0.1 * x**2 + 2.0 * y**2


def _saddle(x: Tensor, y: Tensor) -> Tensor:
    return x**2 - y**2


def _monkey_saddle(x: Tensor, y: Tensor) -> Tensor:
    return x**3 - 3.0 * x * y**2


def _rosenbrock(x: Tensor, y: Tensor) -> Tensor:
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def _rastrigin(x: Tensor, y: Tensor) -> Tensor:
    two_pi = 2.0 * math.pi
    return 20.0 + x**2 - 10.0 * torch.cos(two_pi * x) + y**2 - 10.0 * torch.cos(two_pi * y)


def _beale(x: Tensor, y: Tensor) -> Tensor:
    return (
        (1.5 - x + x * y) ** 2
        + (2.25 - x + x * y**2) ** 2
        + (2.625 - x + x * y**3) ** 2
    )


def _himmelblau(x: Tensor, y: Tensor) -> Tensor:
    return (x**2 + y - 11.0) ** 2 + (x + y**2 - 7.0) ** 2


#: The 2-D test functions by name.
FUNCTIONS: dict[str, Function2D] = {
    fn.name: fn
    for fn in (
        Function2D("square", "x² + y²", _square, ((-2.0, 2.0), (-2.0, 2.0)),
                   (1.5, -1.0), ((0.0, 0.0),), 0.0),
        Function2D("ill_conditioned_quadratic", "0.1·x² + 2·y²", _ill_conditioned,
                   ((-5.0, 5.0), (-2.5, 2.5)), (-4.5, 1.5), ((0.0, 0.0),), 0.0),
        Function2D("saddle", "x² − y²", _saddle, ((-2.0, 2.0), (-2.0, 2.0)),
                   (1.5, 0.05), (), None),
        Function2D("monkey_saddle", "x³ − 3·x·y²", _monkey_saddle,
                   ((-2.0, 2.0), (-2.0, 2.0)), (0.5, 0.05), (), None),
        Function2D("rosenbrock", "(1 − x)² + 100·(y − x²)²", _rosenbrock,
                   ((-2.0, 2.0), (-1.0, 3.0)), (-1.5, 2.0), ((1.0, 1.0),), 0.0,
                   log_scale=True),
        Function2D("rastrigin", "20 + x² − 10·cos 2πx + y² − 10·cos 2πy", _rastrigin,
                   ((-5.12, 5.12), (-5.12, 5.12)), (-3.2, 2.6), ((0.0, 0.0),), 0.0),
        Function2D("beale", "(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²",
                   _beale, ((-4.5, 4.5), (-4.5, 4.5)), (1.0, 1.5), ((3.0, 0.5),), 0.0,
                   log_scale=True),
        Function2D("himmelblau", "(x² + y − 11)² + (x + y² − 7)²", _himmelblau,
                   ((-5.0, 5.0), (-5.0, 5.0)), (0.0, 0.0),
                   ((3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186),
                    (3.584428, -1.848127)), 0.0, log_scale=True),
    )
}


def get_function(name: str) -> Function2D:
    """The 2-D function ``name``; unknown names raise ``ValueError`` listing the valid ones."""
    if not isinstance(name, str):
        raise TypeError(f"function name must be a str, got {name!r} ({type(name).__name__})")
    try:
        return FUNCTIONS[name]
    except KeyError:
        valid = ", ".join(sorted(FUNCTIONS))
        raise ValueError(f"unknown function {name!r}; valid 2-D functions: {valid}") from None


class FunctionTask:
    """A task that minimises a deterministic or stochastic objective of one parameter vector.

    Args:
        objective: exact objective ``w -> scalar``, used by :meth:`evaluate`.
        start: starting point (copied).
        sample: if given, called once per :meth:`train_step` to draw that step's
            stochastic objective ``w -> scalar`` (the same draw is used by every
            closure call within the step, so line searches see one function).
        two_d: expose :attr:`position` (for 2-D functions).
    """

    def __init__(
        self,
        objective: Callable[[Tensor], Tensor],
        start: Tensor,
        sample: Callable[[], Callable[[Tensor], Tensor]] | None = None,
        two_d: bool = False,
    ) -> None:
        self._w = torch.nn.Parameter(start.detach().clone().to(torch.float32))
        self._objective = objective
        self._sample = sample
        self.position: Callable[[], Tensor] | None = self._position if two_d else None

    def _position(self) -> Tensor:
        return self._w.detach().clone()

    def parameters(self) -> list[torch.nn.Parameter]:
        """The single parameter vector."""
        return [self._w]

    def train_step(self, optimizer: torch.optim.Optimizer) -> float:
        """One ``optimizer.step(closure)``; returns the objective before the update."""
        objective = self._objective if self._sample is None else self._sample()
        return closure_step(optimizer, lambda: objective(self._w))

    def evaluate(self) -> dict[str, float]:
        """The exact objective as ``loss``, ``train_loss`` and ``val_loss``."""
        with torch.no_grad():
            value = float(self._objective(self._w))
        return {"loss": value, "train_loss": value, "val_loss": value}


def _start(problem: Problem, seed: int, start: tuple[float, ...]) -> Tensor:
    config = dict(problem.config)
    gen = torch.Generator().manual_seed(seed)
    base = torch.tensor(start, dtype=torch.float32)
    return base + config.get("jitter", 0.0) * torch.randn(base.shape, generator=gen)


def _build_function_task(problem: Problem, seed: int) -> FunctionTask:
    fn = FUNCTIONS[dict(problem.config)["function"]]
    return FunctionTask(fn, _start(problem, seed, fn.start), two_d=True)


class NoisyQuadratic:
    """The noisy quadratic model (Zhang et al., 2019, "Which algorithmic choices matter
    at which batch sizes?").

    ``f(w) = ½ Σᵢ hᵢ wᵢ²`` with curvatures ``hᵢ`` spaced log-uniformly in
    ``[h_min, h_max]``. Each step sees ``f̃(w) = ½ Σᵢ hᵢ (wᵢ − cᵢ)²`` with
    ``cᵢ ~ N(0, noise² / hᵢ)``, so the gradient ``hᵢ(wᵢ − cᵢ)`` is unbiased with
    covariance ``noise² · H`` (the mini-batch model with ``noise² = 1/B``).
    """

    def __init__(self, dim: int, h_min: float, h_max: float, noise: float, seed: int) -> None:
        self.h = torch.logspace(math.log10(h_min), math.log10(h_max), dim)
        self.noise = noise
        self._gen = torch.Generator().manual_seed(seed)

    def __call__(self, w: Tensor) -> Tensor:
        """The exact objective ``½ Σ hᵢ wᵢ²``."""
        return 0.5 * (self.h * w**2).sum()

    def sample(self) -> Callable[[Tensor], Tensor]:
        """Draw one step's stochastic objective."""
        c = self.noise * torch.randn(self.h.shape, generator=self._gen) / self.h.sqrt()
        return lambda w: 0.5 * (self.h * (w - c) ** 2).sum()


def _build_noisy_quadratic(problem: Problem, seed: int) -> FunctionTask:
    c = dict(problem.config)
    model = NoisyQuadratic(c["dim"], c["h_min"], c["h_max"], c["noise"], seed)
    start = torch.full((c["dim"],), c["start"])
    return FunctionTask(model, _start(problem, seed, tuple(start.tolist())), sample=model.sample)


# name: (version, steps, target, jitter, description)
_FUNCTION_PROBLEMS: dict[str, tuple[int, int, float, float, str]] = {
    "square": (1, 100, 1e-4, 0.1, "x² + y²: the seeds' convex bowl"),
    "ill_conditioned_quadratic": (
        1, 200, 1e-4, 0.1, "0.1·x² + 2·y²: a quadratic with condition number 20"),
    "saddle": (1, 100, -1.0, 0.01, "x² − y²: escape a saddle point (reach f ≤ −1)"),
    "monkey_saddle": (
        1, 100, -1.0, 0.01, "x³ − 3xy²: escape a monkey saddle (reach f ≤ −1)"),
    "rosenbrock": (1, 1000, 1e-3, 0.05, "Rosenbrock's banana valley, minimum 0 at (1, 1)"),
    "rastrigin": (
        1, 300, 10.0, 0.05, "Rastrigin: leave the start's basin (f ≈ 18) for one with f ≤ 10"),
    "beale": (1, 300, 1e-3, 0.05, "Beale: flat plateaus and steep walls, minimum at (3, 0.5)"),
    "himmelblau": (1, 300, 1e-3, 0.05, "Himmelblau: four global minima of value 0"),
}

for _name, (_version, _steps, _target, _jitter, _description) in _FUNCTION_PROBLEMS.items():
    register(Problem(
        name=_name,
        version=_version,
        description=_description,
        kind="analytic",
        steps=_steps,
        batch_size=None,
        metric="loss",
        target=_target,
        higher_is_better=False,
        eval_every=max(1, _steps // 50),
        config=(("function", _name), ("jitter", _jitter)),
        builder=_build_function_task,
    ))

register(Problem(
    name="noisy_quadratic",
    version=1,
    description="50-D quadratic, curvatures 0.01..1, noisy gradients (noisy quadratic model)",
    kind="analytic",
    steps=300,
    batch_size=None,
    metric="loss",
    target=0.05,
    higher_is_better=False,
    eval_every=10,
    config=(("dim", 50), ("h_max", 1.0), ("h_min", 0.01), ("jitter", 0.0), ("noise", 0.1),
            ("start", 1.0)),
    builder=_build_noisy_quadratic,
))
