"""Validation of the second-order optimizers against ``scipy.optimize`` (shared code).

Used by ``benchmarks/scipy_comparison.py`` (every row, printed and saved) and
by ``tests/second_order/test_scipy_comparison.py`` (which imports it as
``benchmarks.scipy_check``).

Five problems (float64): Rosenbrock in 2 and 100 dimensions, Beale, a 100-D
quadratic with condition number 1e4, and L2-regularised logistic regression on
scikit-learn's breast-cancer data. Four pairings: our :class:`LBFGS` vs
scipy's L-BFGS-B, our :class:`NewtonCG` vs scipy's Newton-CG (both with
double-backward Hessian-vector products), the same two with products by
finite differences of gradients (ours given the standard ``backward()``
closure, scipy without ``hessp``; each difference is one more evaluation,
counted as such), our :class:`NonlinearCG` (PR+) vs scipy's CG.

Counting, identical on both sides: both call the same torch function, through
a counter that records every function+gradient evaluation (for scipy, with
``jac=True``, one call of the combined function; scipy's memoisation means a
repeated point is not evaluated twice). Hessian-vector products (ours by double
backward, scipy's ``hessp`` by the same double backward) are counted
separately. ``evals`` is the number of evaluations until the first one whose
value meets the target ``f - f* <= 1e-8 max(1, |f*|)``; total evaluations at
each method's own stopping rule are reported as well. Each method runs with
tight tolerances so that it reaches the target if it can.

``f*`` is known in closed form (Rosenbrock, Beale: 0; the quadratic:
``-b.A^{-1}b/2``) or computed by Newton's method with the exact Hessian
(``torch.autograd.functional.hessian``) to machine precision (logistic
regression).

``scipy`` and ``scikit-learn`` are imported only when these functions run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from descentlab.second_order.lbfgs import LBFGS
from descentlab.second_order.newton_cg import NewtonCG
from descentlab.second_order.nonlinear_cg import NonlinearCG

__all__ = ["Problem", "Comparison", "problems", "compare", "PAIRS", "TOLERANCE", "EVAL_RATIO"]

TOLERANCE = 1e-8
EVAL_RATIO = 1.5
PAIRS = (("LBFGS", "L-BFGS-B"), ("NewtonCG", "Newton-CG"),
         ("NewtonCG (backward closure)", "Newton-CG (no hessp)"), ("NonlinearCG", "CG"))


@dataclass
class Problem:
    """A smooth test problem: ``fn`` maps a float64 vector to a scalar tensor."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    x0: torch.Tensor
    f_star: float

    def target(self) -> float:
        """The value a run must reach: ``f* + 1e-8 max(1, |f*|)``."""
        return self.f_star + TOLERANCE * max(1.0, abs(self.f_star))


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    """Chained Rosenbrock ``sum 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``; minimum 0 at ones."""
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def beale(x: torch.Tensor) -> torch.Tensor:
    """Beale's function; minimum 0 at (3, 0.5)."""
    a, b = x[0], x[1]
    return ((1.5 - a + a * b) ** 2 + (2.25 - a + a * b**2) ** 2
            + (2.625 - a + a * b**3) ** 2)


def _quadratic(n: int = 100, cond: float = 1e4, seed: int = 0) -> Problem:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    eig = torch.logspace(0, math.log10(cond), n, dtype=torch.float64)
    a = (q * eig) @ q.T
    a = 0.5 * (a + a.T)
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    f_star = float(-0.5 * b @ torch.linalg.solve(a, b))

    def fn(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x @ (a @ x) - b @ x

    return Problem(f"quadratic (cond 1e4, {n}-D)", fn, torch.zeros(n, dtype=torch.float64),
                   f_star)


def _logistic(l2: float = 1e-3) -> Problem:
    from sklearn.datasets import load_breast_cancer

    data, labels = load_breast_cancer(return_X_y=True)
    x = torch.tensor(data, dtype=torch.float64)
    x = (x - x.mean(0)) / x.std(0)
    x = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    y = torch.tensor(labels, dtype=torch.float64) * 2.0 - 1.0

    def fn(w: torch.Tensor) -> torch.Tensor:
        margins = y * (x @ w)
        return torch.nn.functional.softplus(-margins).mean() + 0.5 * l2 * (w[:-1] @ w[:-1])

    w = torch.zeros(x.shape[1], dtype=torch.float64)
    for _ in range(50):  # exact Newton to machine precision (the reference f*)
        g = torch.func.grad(fn)(w)
        h = torch.autograd.functional.hessian(fn, w)
        w = w - torch.linalg.solve(h, g)
        if float(g.norm()) < 1e-15:
            break
    return Problem("logistic (breast cancer)", fn, torch.zeros(x.shape[1], dtype=torch.float64),
                   float(fn(w)))


def problems() -> list[Problem]:
    """The five validation problems."""
    return [
        Problem("Rosenbrock 2-D", rosenbrock, torch.tensor([-1.2, 1.0], dtype=torch.float64),
                0.0),
        Problem("Rosenbrock 100-D", rosenbrock,
                torch.tensor([-1.2, 1.0], dtype=torch.float64).repeat(50), 0.0),
        Problem("Beale", beale, torch.tensor([1.0, 1.0], dtype=torch.float64), 0.0),
        _quadratic(),
        _logistic(),
    ]


@dataclass
class _Counter:
    target: float
    evals: int = 0
    hvps: int = 0
    hit: int | None = None
    best: float = math.inf

    def record(self, f: float) -> None:
        self.evals += 1
        self.best = min(self.best, f)
        if self.hit is None and f <= self.target:
            self.hit = self.evals


@dataclass
class Comparison:
    """One row of the comparison table."""

    problem: str
    method: str
    scipy_method: str
    f_star: float
    ours_f: float
    scipy_f: float
    ours_evals: int | None
    scipy_evals: int | None
    ours_total_evals: int
    scipy_total_evals: int
    ours_hvps: int = 0
    scipy_hvps: int = 0

    @property
    def ours_reached(self) -> bool:
        """Whether our run reached ``|f - f*| <= 1e-8 max(1, |f*|)``."""
        return abs(self.ours_f - self.f_star) <= TOLERANCE * max(1.0, abs(self.f_star))

    @property
    def ratio(self) -> float:
        """Our evaluations to target divided by scipy's (inf if we never reached it)."""
        if self.ours_evals is None:
            return math.inf
        if self.scipy_evals is None:
            return 0.0
        return self.ours_evals / self.scipy_evals

    @property
    def passed(self) -> bool:
        """Reached the minimum with at most 1.5x scipy's evaluations."""
        return self.ours_reached and self.ours_evals is not None and self.ratio <= EVAL_RATIO

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (with the derived columns)."""
        return {**asdict(self), "ours_reached": self.ours_reached, "ratio": self.ratio,
                "passed": self.passed}


def _run_ours(method: str, problem: Problem) -> tuple[_Counter, float]:
    counter = _Counter(problem.target())
    x = problem.x0.clone().requires_grad_(True)
    common = dict(max_iter=100_000, max_eval=100_000, tolerance_grad=1e-11, tolerance_change=0.0)
    if method == "LBFGS":
        opt: torch.optim.Optimizer = LBFGS([x], history_size=10, line_search_fn="strong_wolfe",
                                           **common)
    elif method.startswith("NewtonCG"):
        opt = NewtonCG([x], **common)
    elif method == "NonlinearCG":
        opt = NonlinearCG([x], variant="PR+", **common)
    else:
        raise ValueError(f"method must be one of {[p[0] for p in PAIRS]}, got {method!r}")

    backward = method == "NewtonCG (backward closure)"

    def closure() -> torch.Tensor:
        loss = problem.fn(x)
        counter.record(float(loss.detach()))
        if backward:  # the standard closure: Hessian-vector products by differences
            x.grad = None
            loss.backward()
        return loss

    opt.step(closure)
    counter.hvps = opt.state[x].get("hvp_evals", 0)
    return counter, float(problem.fn(x.detach()))


def _run_scipy(method: str, problem: Problem) -> tuple[_Counter, float]:
    from scipy.optimize import minimize

    counter = _Counter(problem.target())

    def fun(v: np.ndarray) -> tuple[float, np.ndarray]:
        x = torch.tensor(v, dtype=torch.float64, requires_grad=True)
        f = problem.fn(x)
        (g,) = torch.autograd.grad(f, x)
        counter.record(float(f.detach()))
        return float(f.detach()), g.numpy()

    def hessp(v: np.ndarray, p: np.ndarray) -> np.ndarray:
        counter.hvps += 1
        x = torch.tensor(v, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(problem.fn(x), x, create_graph=True)
        (hv,) = torch.autograd.grad(g, x, torch.tensor(p, dtype=torch.float64))
        return hv.numpy()

    x0 = problem.x0.numpy().copy()
    if method == "L-BFGS-B":
        res = minimize(fun, x0, jac=True, method="L-BFGS-B",
                       options=dict(ftol=0.0, gtol=1e-11, maxiter=100_000, maxfun=100_000))
    elif method.startswith("Newton-CG"):
        res = minimize(fun, x0, jac=True, method="Newton-CG",
                       hessp=hessp if method == "Newton-CG" else None,
                       options=dict(xtol=1e-14, maxiter=100_000))
    elif method == "CG":
        res = minimize(fun, x0, jac=True, method="CG", options=dict(gtol=1e-11, maxiter=100_000))
    else:
        raise ValueError(f"scipy method must be one of {[p[1] for p in PAIRS]}, got {method!r}")
    return counter, float(res.fun)


def compare(problem: Problem, method: str) -> Comparison:
    """Run our ``method`` and its scipy counterpart on ``problem``; return the row."""
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    scipy_method = dict(PAIRS)[method]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problems: threads only add contention
    try:
        with threadpool_limits(1):
            ours, ours_f = _run_ours(method, problem)
            theirs, scipy_f = _run_scipy(scipy_method, problem)
    finally:
        torch.set_num_threads(threads)
    return Comparison(problem.name, method, scipy_method, problem.f_star, ours_f, scipy_f,
                      ours.hit, theirs.hit, ours.evals, theirs.evals, ours.hvps, theirs.hvps)
