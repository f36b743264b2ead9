"""Nonlinear conjugate gradients: Fletcher–Reeves, Polak–Ribière(+), Hestenes–Stiefel,
Dai–Yuan, Hager–Zhang, with restarts."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from descentlab.linesearch._closure import ClosureOptimizer, check_limits, resolve_line_search
from descentlab.linesearch._interp import interpolated_initial_step
from descentlab.linesearch.base import LineSearch
from descentlab.linesearch.wolfe import StrongWolfe
from descentlab.optim.validation import (
    check_int,
    check_learning_rate,
)

__all__ = ["NonlinearCG", "cg_beta", "CG_VARIANTS"]

CG_VARIANTS = ("FR", "PR", "PR+", "HS", "DY", "HZ")


def cg_beta(variant: str, g_new: torch.Tensor, g: torch.Tensor, d: torch.Tensor,
            hz_eta: float = 0.01) -> float:
    r"""The CG coefficient ``beta`` of ``d_new = -g_new + beta d``; ``y = g_new - g``.

    * ``FR`` (Fletcher–Reeves 1964): ``g_new.g_new / g.g``
    * ``PR`` (Polak–Ribière 1969): ``g_new.y / g.g``; ``PR+``: ``max(0, PR)`` (Powell 1986)
    * ``HS`` (Hestenes–Stiefel 1952): ``g_new.y / d.y``
    * ``DY`` (Dai–Yuan 1999): ``g_new.g_new / d.y``
    * ``HZ`` (Hager–Zhang 2005): ``(y - 2 d |y|^2 / d.y).g_new / d.y``, bounded below
      by ``-1 / (|d| min(hz_eta, |g|))``.

    A zero denominator gives ``beta = 0`` (a restart).
    """
    y = g_new - g
    gg = float(torch.dot(g, g))
    dy = float(torch.dot(d, y))
    if variant == "FR":
        num, den = float(torch.dot(g_new, g_new)), gg
    elif variant in ("PR", "PR+"):
        num, den = float(torch.dot(g_new, y)), gg
    elif variant == "HS":
        num, den = float(torch.dot(g_new, y)), dy
    elif variant == "DY":
        num, den = float(torch.dot(g_new, g_new)), dy
    elif variant == "HZ":
        if dy == 0:
            return 0.0
        yy = float(torch.dot(y, y))
        beta = (float(torch.dot(y, g_new)) - 2.0 * yy * float(torch.dot(d, g_new)) / dy) / dy
        floor = -1.0 / (float(d.norm()) * min(hz_eta, math.sqrt(gg)))
        return max(beta, floor)
    else:
        raise ValueError(f"variant must be one of {CG_VARIANTS}, got {variant!r}")
    if den == 0:
        return 0.0
    beta = num / den
    return max(beta, 0.0) if variant == "PR+" else beta


class NonlinearCG(ClosureOptimizer):
    r"""Nonlinear conjugate gradient method with a choice of ``beta`` and restarts.

    ``d_0 = -g_0``; ``x_{k+1} = x_k + t_k d_k`` with ``t_k`` from the line search;
    ``d_{k+1} = -g_{k+1} + beta_k d_k`` with ``beta_k`` from :func:`cg_beta`
    (``variant``: ``"FR"``, ``"PR"``, ``"PR+"`` (default), ``"HS"``, ``"DY"``,
    ``"HZ"``). The direction restarts at ``-g`` when

    * ``restart_every`` iterations have passed since the last restart (default:
      the number of parameters, the classical ``n``-step restart);
    * Powell's test fires, ``|g_{k+1}.g_k| >= 0.2 |g_{k+1}|^2`` (gradients far from
      orthogonal; ``powell_restart=True``);
    * the new direction is not a descent direction.

    The first trial step is ``min(1, 1/||g||)`` on the first iteration and then
    ``min(1, 1.01 * 2 (f_k - f_{k-1}) / g_k.d_k)`` (N&W eq. 3.60: assume the same
    decrease as last time). Default line search: strong Wolfe with ``c2 = 0.4``
    (strong Wolfe with ``c2 < 1/2`` makes FR a descent method, N&W Lemma 5.6).

    Closure protocol: ``closure()`` zeroes the gradients, computes the loss, calls
    ``loss.backward()`` and returns the loss (or returns the loss without calling
    backward). ``step(closure)`` calls it once at the start and once per
    line-search trial, at most ``max_eval`` times, for at most ``max_iter``
    iterations; ``step()`` without a closure raises ``TypeError``. Returns the
    loss at the start. Stopping rules as in :class:`LBFGS`.

    Args:
        params: parameters or groups (one vector; a group's ``lr`` scales its part
            of the direction; the rest comes from the first group).
        lr: direction scale (default 1).
        variant: the ``beta`` formula.
        max_iter, max_eval, tolerance_grad, tolerance_change: as in
            ``torch.optim.LBFGS``.
        line_search: a name or a :class:`~descentlab.linesearch.LineSearch`
            (default ``StrongWolfe(c1=1e-4, c2=0.4)``).
        restart_every: restart period in iterations (None: number of parameters).
        powell_restart: use Powell's orthogonality restart test.

    References: Nocedal & Wright, *Numerical Optimization*, 2nd ed., ch. 5.2;
    W. Hager, H. Zhang, "A survey of nonlinear conjugate gradient methods",
    Pacific J. Optim. 2 (2006).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        variant: str = "PR+",
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        line_search: str | LineSearch | None = None,
        restart_every: int | None = None,
        powell_restart: bool = True,
    ) -> None:
        check_learning_rate(lr)
        if variant not in CG_VARIANTS:
            raise ValueError(f"variant must be one of {CG_VARIANTS}, got {variant!r}")
        max_eval = check_limits(max_iter, max_eval, tolerance_grad, tolerance_change)
        if restart_every is not None:
            check_int("restart_every", restart_every, minimum=1)
        if not isinstance(powell_restart, bool):
            raise TypeError(f"powell_restart must be a bool, got {powell_restart!r}")
        if line_search is not None:
            resolve_line_search(line_search, allow_none=False)  # refuse a bad name now
        defaults = dict(lr=lr, variant=variant, max_iter=max_iter, max_eval=max_eval,
                        tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                        line_search=line_search, restart_every=restart_every,
                        powell_restart=powell_restart)
        super().__init__(params, defaults)

    def _line_search(self) -> LineSearch:
        spec = self.param_groups[0]["line_search"]
        if spec is None:
            return StrongWolfe(c1=1e-4, c2=0.4)
        return resolve_line_search(spec, allow_none=False)

    def _iterate(self, closure: Callable[[], Any]) -> Any:
        """Run up to ``max_iter`` CG iterations (see the class docstring)."""
        group, state = self._begin_step(restarts=0, line_search_failures=0)
        tol_grad, tol_change = group["tolerance_grad"], group["tolerance_change"]
        n = sum(p.numel() for p in self._params())
        period = group["restart_every"] or n
        lr = self._lr()
        search = self._line_search()
        start = state["func_evals"]

        ev = self._evaluate(closure, create_graph=search.needs_hessian)
        orig_loss = ev.loss
        x = self._flat_params()
        d = state.get("d")
        since = state.get("since_restart", 0)
        f_prev = state.get("f_prev")
        if d is None or float(torch.dot(ev.g, d)) >= 0:
            d, since, f_prev = -ev.g * lr, 0, None
        for _ in range(group["max_iter"]):
            if float(ev.g.abs().max()) <= tol_grad:
                break
            state["n_iter"] += 1
            gtd = float(torch.dot(ev.g, d))
            if f_prev is None:
                t0 = min(1.0, 1.0 / float(ev.g.norm()))
            else:
                t0 = interpolated_initial_step(ev.f, f_prev, gtd)
            res, new_ev = self._run_line_search(closure, search, x, ev, d, t0)
            if not res.success:
                state["line_search_failures"] += 1
                if res.step == 0.0:
                    if since > 0:  # retry once from steepest descent
                        d, since, f_prev = -ev.g * lr, 0, None
                        state["restarts"] += 1
                        continue
                    break
            x_new = self._flat_params()
            step_vec = x_new - x
            f_prev = ev.f
            since += 1
            restart = since >= period or (
                group["powell_restart"]
                and abs(float(torch.dot(new_ev.g, ev.g))) >= 0.2 * float(torch.dot(new_ev.g,
                                                                                   new_ev.g))
            )
            if restart:
                d_new = -new_ev.g * lr
            else:
                beta = cg_beta(group["variant"], new_ev.g, ev.g, d)
                d_new = -new_ev.g * lr + beta * d
                if not float(torch.dot(new_ev.g, d_new)) < 0:
                    restart, d_new = True, -new_ev.g * lr
            if restart:
                since = 0
                state["restarts"] += 1
            d, ev, x = d_new, new_ev, x_new
            if state["func_evals"] - start >= group["max_eval"]:
                break
            if float(step_vec.abs().max()) <= tol_change or abs(ev.f - f_prev) < tol_change:
                break
        state["d"], state["since_restart"], state["f_prev"] = d, since, f_prev
        return orig_loss
