"""L-BFGS: torch.optim.LBFGS's algorithm and state, plus line searches and parameter groups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from descentlab.linesearch._closure import ClosureOptimizer, check_limits, resolve_line_search
from descentlab.linesearch._flat import ClosureEvaluation, add_to_params
from descentlab.linesearch.base import LineSearch
from descentlab.linesearch.minfunc import minfunc_strong_wolfe
from descentlab.optim.validation import check_int, check_learning_rate

__all__ = ["LBFGS", "two_loop"]

#: ``line_search_fn`` value that selects torch's own strong Wolfe search
TORCH_STRONG_WOLFE = "strong_wolfe"


def two_loop(flat_grad: torch.Tensor, old_dirs: list[torch.Tensor],
             old_stps: list[torch.Tensor], ro: list[Any], h_diag: Any, al: list[Any],
             precond: torch.Tensor | None = None) -> torch.Tensor:
    """The L-BFGS direction ``-H g`` by the two-loop recursion (N&W Alg. 7.4).

    ``old_dirs`` hold the gradient changes ``y``, ``old_stps`` the steps ``s``,
    ``ro`` the ``1 / (y . s)`` (torch's names and order, oldest first); ``H_0 =
    h_diag I`` (times ``diag(precond)`` if given). ``al`` receives the first
    loop's coefficients, as in torch's state.
    """
    q = flat_grad.neg()
    for i in range(len(old_dirs) - 1, -1, -1):
        al[i] = old_stps[i].dot(q) * ro[i]
        q.add_(old_dirs[i], alpha=-al[i])
    r = torch.mul(q, h_diag)
    if precond is not None:
        r.mul_(precond)
    for i in range(len(old_dirs)):
        be_i = old_dirs[i].dot(r) * ro[i]
        r.add_(old_stps[i], alpha=al[i] - be_i)
    return r


class LBFGS(ClosureOptimizer):
    r"""Limited-memory BFGS (Nocedal & Wright, Alg. 7.4 and 7.5), closure-based.

    The algorithm, defaults and state of ``torch.optim.LBFGS``: each iteration
    takes ``d = -H_k g_k``, where ``H_k`` comes from the two-loop recursion over
    the last ``history_size`` pairs ``s = t d`` (the step taken) and ``y =
    g_{k+1} - g_k``, with ``H_0 = (s.y / y.y) I`` from the newest pair; a pair
    is stored only if ``y . s > 1e-10`` (torch's test). Pairs are formed at
    the start of the next iteration — of the next ``step`` call after the last
    iteration — so a run split into ``step`` calls, or resumed from a
    checkpoint, takes the same iterates as one long run. The step ``t`` along
    ``d`` is ``lr`` (``min(1, 1/||g||_1) lr`` on the very first iteration), or
    comes from the line search started there.

    Drop-in for ``torch.optim.LBFGS``: same arguments, defaults, closure
    protocol and ``state`` (under the first parameter: ``func_evals``,
    ``n_iter``, ``d``, ``t``, ``old_dirs``, ``old_stps``, ``ro``, ``H_diag``,
    ``prev_flat_grad``, ``prev_loss``, ``al``), so a checkpoint of either loads
    into the other and continues identically; with ``line_search_fn=None`` or
    ``"strong_wolfe"`` (torch's own search,
    :func:`~descentlab.linesearch.minfunc.minfunc_strong_wolfe`) the iterates
    are torch's, bit for bit. A closure may return a Python number, set the
    gradients outside, or leave parameters without gradients, as in torch;
    complex parameters count as their real and imaginary parts.

    Beyond torch: ``line_search_fn`` also accepts ``"armijo"``,
    ``"armijo_goldstein"``, ``"full_relaxation"`` or any
    :class:`~descentlab.linesearch.LineSearch` object (then a failed search
    without decrease discards the memory and retries along ``-g``, once;
    ``state["line_search_failures"]`` counts failures) — note that the *name*
    ``"strong_wolfe"`` means torch's search while a
    :class:`~descentlab.linesearch.StrongWolfe` object is Nocedal & Wright's;
    several parameter groups are allowed (they form one vector, the other
    hyperparameters come from the first group; when their ``lr`` differ, the
    largest scales the step and the ratios ``lr_group / lr_max`` form a
    diagonal ``H_0 = gamma diag(ratios)``, which keeps ``H_k`` positive
    definite); parameters may live on several devices; a closure may return
    the loss without calling ``backward`` (it is then differentiated here).

    Closure protocol: ``closure()`` zeroes the gradients, computes the loss,
    calls ``loss.backward()`` and returns the loss. ``step(closure)`` calls it
    once at the start and then once per line-search trial (once per iteration
    without a line search, except after the last), at most ``max_eval`` times,
    for at most ``max_iter`` iterations, and returns what the first call
    returned. ``step()`` without a closure raises ``TypeError``.

    Stops early when ``max |g| <= tolerance_grad``, when ``g . d >
    -tolerance_change``, when ``max |t d| <= tolerance_change`` or when the
    loss changes by less than ``tolerance_change``.

    Args:
        params: parameters or parameter groups.
        lr: step scale (default 1).
        max_iter: iterations per ``step`` (default 20).
        max_eval: closure calls per ``step`` (default ``max_iter * 5 // 4``).
        tolerance_grad: first-order optimality tolerance (default 1e-7).
        tolerance_change: tolerance on step and loss changes (default 1e-9).
        history_size: memory ``m`` (default 100).
        line_search_fn: None (fixed step ``lr``, torch's default),
            ``"strong_wolfe"`` (torch's search, recommended), another name, or a
            line-search object.
    """

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor = 1.0,
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
        resolve_line_search(line_search_fn)  # refuse a bad name now
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                        tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                        history_size=history_size, line_search_fn=line_search_fn)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; only ``lr`` may differ from the first group."""
        if "lr" in param_group:
            check_learning_rate(param_group["lr"])
        super().add_param_group(param_group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict of this class or of ``torch.optim.LBFGS``.

        A checkpoint of descentlab 0.1 (whose memory held ``s`` in ``old_dirs``
        and ``y`` in ``old_stps``, and no pending pair) is converted: the memory
        is kept, and the pair of its last iteration is not formed.
        """
        super().load_state_dict(state_dict)
        state = self._global_state()
        if "hvp_evals" in state and "prev_flat_grad" not in state:
            del state["hvp_evals"]
            state["old_dirs"], state["old_stps"] = state.get("old_stps", []), state.get(
                "old_dirs", [])
            state.setdefault("ro", [])
            state.setdefault("H_diag", 1)

    def _params(self) -> list[torch.Tensor]:
        # torch's: every parameter, also those without a gradient (their part of d is 0)
        return [p for g in self.param_groups for p in g["params"]]

    def _line_search(self) -> LineSearch | None:
        spec = self.param_groups[0]["line_search_fn"]
        return None if spec == TORCH_STRONG_WOLFE else resolve_line_search(spec)

    def _iterate(self, closure: Callable[[], Any]) -> Any:
        """Run up to ``max_iter`` L-BFGS iterations (see the class docstring)."""
        group, state = self._begin_step()
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tol_grad, tol_change = group["tolerance_grad"], group["tolerance_change"]
        history_size = group["history_size"]
        torch_search = group["line_search_fn"] == TORCH_STRONG_WOLFE
        search = self._line_search()
        lr = self._lr()
        precond = None
        if isinstance(lr, torch.Tensor):  # groups differ: relative lr preconditions H0
            scale = float(lr.max())
            precond, lr = lr / scale, scale
        elif isinstance(group["lr"], torch.Tensor):  # a tensor lr enters as torch's does
            lr = group["lr"] if group["lr"].dim() == 0 else group["lr"].squeeze()
        params = self._params()
        hessian = search is not None and search.needs_hessian

        ev = self._evaluate(closure, create_graph=hessian)
        orig_loss = ev.loss
        current_evals = 1
        loss, flat_grad = ev.f, ev.g
        opt_cond = flat_grad.abs().max() <= tol_grad
        if opt_cond:
            return orig_loss

        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        h_diag = state.get("H_diag")
        prev_flat_grad, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")
        restart = False
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            # -- direction -----------------------------------------------------------------
            if state["n_iter"] == 1 or restart:
                d = flat_grad.neg() if precond is None else flat_grad.neg().mul_(precond)
                old_dirs, old_stps, ro = [], [], []
                h_diag = 1
                restart = False
            else:
                ys = None
                if prev_flat_grad is not None:  # (None: a checkpoint of descentlab 0.1)
                    y = flat_grad.sub(prev_flat_grad)
                    s = d.mul(t)
                    ys = y.dot(s)
                if ys is not None and ys > 1e-10:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0), old_stps.pop(0), ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    h_diag = ys / y.dot(y)
                if "al" not in state:
                    state["al"] = [None] * history_size
                d = two_loop(flat_grad, old_dirs, old_stps, ro, h_diag, state["al"], precond)
            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.clone(memory_format=torch.contiguous_format)
            else:
                prev_flat_grad.copy_(flat_grad)
            prev_loss = loss
            last_t = None if t is None else float(t)
            # -- step length ---------------------------------------------------------------
            t = min(1.0, 1.0 / flat_grad.abs().sum()) * lr if state["n_iter"] == 1 else lr
            gtd = flat_grad.dot(d)
            if gtd > -tol_change:
                break
            ls_evals = 0
            if torch_search:
                x_init = [p.clone(memory_format=torch.contiguous_format) for p in params]

                def along(step: Any, d: torch.Tensor = d, x_init: list = x_init) -> tuple:
                    add_to_params(params, d, step)
                    trial = self._evaluate(closure)
                    for p, x0 in zip(params, x_init, strict=True):
                        p.copy_(x0)
                    return trial.f, trial.g

                loss, flat_grad, t, ls_evals = minfunc_strong_wolfe(
                    along, t, d, loss, flat_grad, gtd, max_evals=max_eval - current_evals)
                add_to_params(params, d, t)
                opt_cond = flat_grad.abs().max() <= tol_grad
            elif search is None:
                add_to_params(params, d, t)
                if n_iter != max_iter:
                    ev = self._evaluate(closure)
                    loss, flat_grad = ev.f, ev.g
                    opt_cond = flat_grad.abs().max() <= tol_grad
                    ls_evals = 1
            else:
                start = state["func_evals"]
                x = self._flat_params()
                ev0 = ClosureEvaluation(None, loss, flat_grad, ev.graph_grads)
                res, ev = self._run_line_search(
                    closure, search, x, ev0, d, search.initial_step(last_t, float(t)))
                ls_evals = state["func_evals"] - start
                t = res.step
                if not res.success:
                    state["line_search_failures"] = state.get("line_search_failures", 0) + 1
                    if res.step == 0.0:
                        current_evals += ls_evals
                        if not old_dirs or current_evals >= max_eval:
                            break
                        restart = True  # discard the memory and retry along -g
                        continue
                loss, flat_grad = ev.f, ev.g
                opt_cond = flat_grad.abs().max() <= tol_grad
            current_evals += ls_evals
            # -- stopping ------------------------------------------------------------------
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if d.mul(t).abs().max() <= tol_change:
                break
            if abs(loss - prev_loss) < tol_change:
                break

        state["d"], state["t"] = d, t
        state["old_dirs"], state["old_stps"], state["ro"] = old_dirs, old_stps, ro
        state["H_diag"] = h_diag
        state["prev_flat_grad"], state["prev_loss"] = prev_flat_grad, prev_loss
        return orig_loss
