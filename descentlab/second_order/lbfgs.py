"""L-BFGS with a choice of line search, several parameter groups, any device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from descentlab.linesearch._closure import ClosureOptimizer, check_limits, resolve_line_search
from descentlab.linesearch._flat import add_to_params
from descentlab.linesearch.base import LineSearch
from descentlab.optim.validation import check_int, check_learning_rate

__all__ = ["LBFGS"]


def two_loop(g: torch.Tensor, s_list: list[torch.Tensor], y_list: list[torch.Tensor],
             rho: list[float], gamma: float, diag: torch.Tensor | None = None) -> torch.Tensor:
    """``H g`` for the L-BFGS inverse-Hessian approximation (N&W Alg. 7.4).

    ``H0 = gamma I``, or ``gamma diag(diag)`` when a positive diagonal is given.
    """
    q = g.clone()
    alphas = []
    for s, y, r in zip(reversed(s_list), reversed(y_list), reversed(rho), strict=True):
        a = r * float(torch.dot(s, q))
        q.add_(y, alpha=-a)
        alphas.append(a)
    q.mul_(gamma)
    if diag is not None:
        q.mul_(diag)
    for s, y, r, a in zip(s_list, y_list, rho, reversed(alphas), strict=True):
        b = r * float(torch.dot(y, q))
        q.add_(s, alpha=a - b)
    return q


class LBFGS(ClosureOptimizer):
    r"""Limited-memory BFGS (Nocedal & Wright, Alg. 7.4 and 7.5), closure-based.

    Each iteration takes ``d = -lr * H_k g_k`` where ``H_k`` is the inverse-Hessian
    approximation built by the two-loop recursion from the last ``history_size``
    pairs ``s = x_{k+1} - x_k``, ``y = g_{k+1} - g_k`` (pairs with
    ``s . y <= 1e-10 * y . y`` are skipped so ``H_k`` stays positive definite),
    scaled by ``H_0 = (s.y / y.y) I``. The step ``t`` along ``d`` comes from the line
    search; the first trial is ``1`` except on the very first iteration, where it is
    ``min(1, 1/||g||_1)`` (as in torch; scipy's L-BFGS-B uses ``1/||g||_2``).

    Drop-in for ``torch.optim.LBFGS`` (same argument names and defaults), with
    these differences: ``line_search_fn`` also accepts ``"armijo"``,
    ``"armijo_goldstein"`` or any :class:`~descentlab.linesearch.LineSearch`
    object; several parameter groups are allowed (all groups form one vector; the
    other hyperparameters are read from the first group); parameters may live on
    any device. When groups have different ``lr``, the largest scales the step as
    above and the ratios ``lr_group / lr_max`` form a diagonal ``H_0 = gamma
    diag(ratios)``, which keeps ``H_k`` symmetric positive definite (so ``d`` stays
    a descent direction).

    Closure protocol: ``closure()`` zeroes the gradients, computes the loss, calls
    ``loss.backward()`` and returns the loss (returning the loss without calling
    backward also works). ``step(closure)`` calls it once at the start and then
    once per line-search trial (once per iteration without a line search), at
    most ``max_eval`` times in total, for at most ``max_iter`` iterations.
    ``step()`` without a closure raises ``TypeError``. Returns the loss at the
    start of the step.

    Stops early when ``max |g| <= tolerance_grad``, when ``max |t d| <=
    tolerance_change``, when the loss changes by less than ``tolerance_change``,
    or when the line search fails (counted in ``state["line_search_failures"]``):
    a failed search that still decreased the loss is accepted and ends the call;
    one without decrease discards the memory and retries along ``-g``, and ends
    the call if that fails too.

    Args:
        params: parameters or parameter groups.
        lr: step scale (default 1).
        max_iter: iterations per ``step`` (default 20).
        max_eval: closure calls per ``step`` (default ``max_iter * 5 // 4``).
        tolerance_grad: first-order optimality tolerance (default 1e-7).
        tolerance_change: tolerance on step and loss changes (default 1e-9).
        history_size: memory ``m`` (default 100).
        line_search_fn: None (fixed step ``lr``, torch's default), ``"strong_wolfe"``
            (recommended), another name, or a line-search object.

    The global state (under the first parameter) holds the memory
    (``old_dirs``, ``old_stps``, ``ro``, ``H_diag``) and the counters
    ``func_evals``, ``n_iter``.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | LineSearch | None = None,
    ) -> None:
        check_learning_rate(lr)
        max_eval = check_limits(max_iter, max_eval, tolerance_grad, tolerance_change)
        check_int("history_size", history_size, minimum=1)
        self._search = resolve_line_search(line_search_fn)
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                        tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                        history_size=history_size, line_search_fn=line_search_fn)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; only ``lr`` may differ from the first group."""
        if "lr" in param_group:
            check_learning_rate(param_group["lr"])
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> torch.Tensor:  # type: ignore[override]
        """Run up to ``max_iter`` L-BFGS iterations (see the class docstring)."""
        closure, group, state = self._begin_step(
            closure, line_search_failures=0, old_dirs=[], old_stps=[], ro=[]
        )
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tol_grad, tol_change = group["tolerance_grad"], group["tolerance_change"]
        m = group["history_size"]
        s_list: list[torch.Tensor] = state["old_dirs"]
        y_list: list[torch.Tensor] = state["old_stps"]
        rho: list[float] = state["ro"]
        lr = self._lr()
        precond = None
        if isinstance(lr, torch.Tensor):  # groups differ: relative lr preconditions H0
            scale = float(lr.max())
            precond, lr = lr / scale, scale
        params = self._params()

        start_evals = state["func_evals"]
        ev = self._evaluate(closure, create_graph=self._hessian())
        orig_loss = torch.tensor(ev.f)
        if float(ev.g.abs().max()) <= tol_grad:
            return orig_loss
        x = self._flat_params()
        for _ in range(max_iter):
            state["n_iter"] += 1
            gamma = state.get("H_diag", 1.0)
            if s_list:
                d = -two_loop(ev.g, s_list, y_list, rho, gamma, precond)
            else:
                d = -ev.g if precond is None else -ev.g * precond
            d = d * lr
            gtd = float(torch.dot(ev.g, d))
            if gtd > -tol_change:
                if not s_list:
                    break
                s_list.clear(), y_list.clear(), rho.clear()
                continue
            if state["n_iter"] == 1:
                t = min(1.0, 1.0 / float(ev.g.abs().sum()))
            else:
                t = 1.0
            failed = False
            if self._search is None:
                add_to_params(params, d, t)
                new_ev = self._evaluate(closure)
            else:
                t = self._search.initial_step(state.get("t"), t)
                res, new_ev = self._run_line_search(closure, self._search, x, ev, d, t)
                t = res.step
                if not res.success:
                    state["line_search_failures"] += 1
                    failed = True
                    if t == 0.0:
                        if s_list:  # discard the memory and retry from steepest descent
                            s_list.clear(), y_list.clear(), rho.clear()
                            continue
                        break
            state["t"] = t
            x_new = self._flat_params()
            s = x_new - x
            y = new_ev.g - ev.g
            ys = float(torch.dot(y, s))
            yy = float(torch.dot(y, y))
            if ys > 1e-10 * yy and ys > 0:
                if len(s_list) == m:
                    s_list.pop(0), y_list.pop(0), rho.pop(0)
                s_list.append(s)
                y_list.append(y)
                rho.append(1.0 / ys)
                state["H_diag"] = ys / yy
            f_prev = ev.f
            ev, x = new_ev, x_new
            if failed or state["func_evals"] - start_evals >= max_eval:
                break
            if float(ev.g.abs().max()) <= tol_grad:
                break
            if float(s.abs().max()) <= tol_change:
                break
            if abs(ev.f - f_prev) < tol_change:
                break
        return orig_loss
