"""Gradient descent with a line search, and perturbed gradient descent (saddle escape)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from descentlab.linesearch._closure import (
    ClosureOptimizer,
    check_hvp_mode,
    check_limits,
    resolve_line_search,
)
from descentlab.linesearch._flat import add_to_params, set_params
from descentlab.linesearch.base import LineSearch
from descentlab.optim.validation import (
    check_int,
    check_learning_rate,
    check_nonnegative,
    check_positive,
)

__all__ = ["LineSearchGD", "PerturbedGD"]


class LineSearchGD(ClosureOptimizer):
    r"""Gradient descent whose step length comes from a line search.

    Each iteration searches along ``d = -lr * g`` (a group's ``lr`` scales its
    part of the direction) for a step ``t`` accepted by ``line_search``, and sets
    ``x <- x + t d``. The first trial is ``t = 1`` (i.e. a step of ``lr``), or
    ``previous t * growth`` for searches with a ``growth`` (for example
    :class:`~descentlab.linesearch.StochasticArmijo`, Vaswani et al. 2019, which
    makes this SGD with a stochastic line search when the closure evaluates one
    fixed mini-batch per step).

    With ``line_search="full_relaxation"`` the search uses one Hessian-vector
    product per iteration and starts from the exact minimiser of the quadratic
    model along ``d`` (seed 003's "full relaxation"); ``hvp`` says how it is
    taken, as in :class:`~descentlab.second_order.NewtonCG` (default
    ``"auto"``: double backward when the closure leaves a graph, else a
    forward difference of gradients — one extra closure call per iteration).

    Closure protocol: ``closure()`` zeroes the gradients, computes the loss, calls
    ``loss.backward()`` and returns the loss (or returns the loss without calling
    backward). It is called once at the start of ``step`` and once per
    line-search trial; for mini-batch training it must use the same batch on
    every call within one ``step``. ``step()`` without a closure raises
    ``TypeError``. Returns what the first closure call returned.

    A failed search (no acceptable step) leaves the parameters where they are,
    counts ``state["line_search_failures"]``, resets the carried step, and ends
    the ``step`` call.

    Args:
        params: parameters or parameter groups.
        lr: length of the first trial step along ``-g`` (default 1).
        line_search: a name or a :class:`~descentlab.linesearch.LineSearch`
            (default ``"armijo"``).
        max_iter: iterations per ``step`` (default 1, for training loops; raise it
            for full-batch problems).
        max_eval: closure calls per ``step`` (default ``max(25, max_iter * 25)``).
        tolerance_grad: stop when ``max |g| <= tolerance_grad`` (default 1e-7).
        hvp: ``"auto"``, ``"autograd"`` or ``"finite_difference"``, for
            curvature-using searches.
    """

    def __init__(self, params: Any, lr: float = 1.0, line_search: str | LineSearch = "armijo",
                 max_iter: int = 1, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, hvp: str = "auto") -> None:
        check_learning_rate(lr)
        max_eval = check_limits(max_iter, max_eval, tolerance_grad,
                                default_max_eval=lambda n: max(25, 25 * n))
        resolve_line_search(line_search, allow_none=False)  # refuse a bad name now
        check_hvp_mode(hvp)
        defaults = dict(lr=lr, line_search=line_search, max_iter=max_iter, max_eval=max_eval,
                        tolerance_grad=tolerance_grad, hvp=hvp)
        super().__init__(params, defaults)

    def _iterate(self, closure: Callable[[], Any]) -> Any:
        """Run up to ``max_iter`` line-searched gradient steps (see the class docstring)."""
        group, state = self._begin_step(line_search_failures=0)
        search = self._line_search()
        hessian = search.needs_hessian
        lr = self._lr()
        start = state["func_evals"]
        ev = self._evaluate(closure, create_graph=hessian)
        orig_loss = ev.loss
        x = self._flat_params()
        for _ in range(group["max_iter"]):
            if float(ev.g.abs().max()) <= group["tolerance_grad"]:
                break
            state["n_iter"] += 1
            d = -ev.g * lr
            t0 = search.initial_step(state.get("t"), 1.0)
            res, ev = self._run_line_search(closure, search, x, ev, d, t0,
                                            need_graph=hessian)
            if not res.success and res.step == 0.0:
                state["line_search_failures"] += 1
                state["t"] = None
                break
            state["t"] = res.step
            x = self._flat_params()
            if state["func_evals"] - start >= group["max_eval"]:
                break
        return orig_loss


class PerturbedGD(ClosureOptimizer):
    r"""Perturbed gradient descent (Jin, Ge, Netrapalli, Kakade, Jordan, 2017).

    Plain gradient descent ``x <- x - lr * g``, except that when the gradient is
    small, ``||g|| <= grad_threshold``, and at least ``wait`` iterations have
    passed since the last perturbation, the point is first moved by ``xi`` drawn
    uniformly from the ball of radius ``radius`` (seed 001's "intermittent
    perturbations"); the gradient step is then taken from the perturbed point.
    At a strict saddle the perturbation has a component along a negative-curvature
    direction, which gradient descent then amplifies, so the iterate escapes where
    plain gradient descent (whose gradient there is exactly zero) stays put.

    Optional stopping rule of the paper: with ``f_threshold`` set, if ``wait``
    iterations after a perturbation the loss has not dropped by ``f_threshold``
    below its value before the perturbation, the point before the perturbation is
    restored and ``state["converged"]`` is set (later steps do nothing).

    Closure protocol: ``closure()`` zeroes the gradients, computes the loss, calls
    ``loss.backward()`` and returns the loss (or returns the loss without calling
    backward). ``step(closure)`` performs one iteration and calls it once, or
    twice on an iteration with a perturbation (the gradient at the perturbed
    point). ``step()`` without a closure raises ``TypeError``. Returns the loss at
    the start of the step.

    Args:
        params: parameters or parameter groups (the ball is in the space of all
            parameters; a group's ``lr`` applies to its parameters).
        lr: step size ``eta`` (the paper takes ``1/l`` for an ``l``-smooth f);
            default 0.01.
        grad_threshold: ``g_thres``; default 1e-3.
        radius: perturbation radius ``r``; default 1e-2.
        wait: ``t_thres``, iterations between perturbations; default 10.
        f_threshold: ``f_thres`` of the stopping rule (None: never stop).
        seed: seed of a private generator for the perturbations (None: torch's
            global generator); its state is saved in ``state_dict``.

    State: ``step``, ``perturbations``, ``last_perturbation``, ``func_evals``.

    Reference: C. Jin, R. Ge, P. Netrapalli, S. Kakade, M. Jordan, "How to Escape
    Saddle Points Efficiently", ICML 2017, Algorithm 2.
    """

    _pickled_attributes = ("_generator",)

    def __init__(self, params: Any, lr: float = 0.01, grad_threshold: float = 1e-3,
                 radius: float = 1e-2, wait: int = 10, f_threshold: float | None = None,
                 seed: int | None = None) -> None:
        check_learning_rate(lr)
        check_nonnegative("grad_threshold", grad_threshold)
        check_positive("radius", radius)
        check_int("wait", wait, minimum=0)
        if f_threshold is not None:
            check_nonnegative("f_threshold", f_threshold)
        if seed is not None:
            check_int("seed", seed)
        defaults = dict(lr=lr, grad_threshold=grad_threshold, radius=radius, wait=wait,
                        f_threshold=f_threshold)
        super().__init__(params, defaults)
        self._generator = None if seed is None else torch.Generator().manual_seed(seed)

    def _ball(self, n: int, radius: float, like: torch.Tensor) -> torch.Tensor:
        z = torch.randn(n, generator=self._generator, dtype=torch.float64)
        u = torch.rand((), generator=self._generator, dtype=torch.float64)
        xi = z / z.norm() * radius * float(u) ** (1.0 / n)
        return xi.to(device=like.device, dtype=like.dtype)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state (including the perturbation generator's state, if seeded)."""
        super().load_state_dict(state_dict)
        rng = self._global_state().get("rng_state")
        if self._generator is not None and rng is not None:
            self._generator.set_state(rng.detach().to("cpu", torch.uint8))

    def _iterate(self, closure: Callable[[], Any]) -> Any:
        """One perturbed-gradient-descent iteration (see the class docstring)."""
        group, state = self._begin_step(step=0, perturbations=0, last_perturbation=-math.inf)
        params = self._params()
        ev = self._evaluate(closure)
        orig_loss = ev.loss
        if state.get("converged"):
            return orig_loss
        t = state["step"]
        f_thres = group["f_threshold"]
        if (f_thres is not None and "anchor" in state
                and t - state["last_perturbation"] == group["wait"]
                and ev.f - state["anchor_f"] > -f_thres):
            set_params(params, state["anchor"])
            state["converged"] = True
            return orig_loss
        if (float(ev.g.norm()) <= group["grad_threshold"]
                and t - state["last_perturbation"] > group["wait"]):
            x = self._flat_params()
            state["anchor"], state["anchor_f"] = x, ev.f
            add_to_params(params, self._ball(x.numel(), group["radius"], x))
            state["last_perturbation"] = t
            state["perturbations"] += 1
            ev = self._evaluate(closure)
        add_to_params(params, ev.g * self._lr(), -1.0)
        state["step"] = t + 1
        state["n_iter"] += 1
        if self._generator is not None:
            state["rng_state"] = self._generator.get_state()
        return orig_loss
