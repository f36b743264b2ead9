"""Newton-CG (Hessian-free): truncated CG on Hessian-vector products; line search or trust
region."""

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
from descentlab.linesearch._flat import set_params
from descentlab.linesearch._interp import interpolated_initial_step
from descentlab.linesearch.base import LineSearch
from descentlab.optim.validation import (
    check_int,
    check_interval,
    check_learning_rate,
    check_positive,
)

__all__ = ["NewtonCG", "truncated_cg", "steihaug_cg"]

HVP = Callable[[torch.Tensor], torch.Tensor]


def truncated_cg(hvp: HVP, g: torch.Tensor, tol: float, max_iter: int) -> tuple[torch.Tensor, int]:
    """Approximately solve ``H p = -g`` by CG, stopping at ``||H p + g|| <= tol`` (N&W Alg. 7.1).

    On negative (or zero) curvature ``d^T H d <= 0`` the iterate so far is
    returned; if it happens on the first iteration, steepest descent scaled by
    the size of the curvature, ``-(g.g / |g.Hg|) g`` (``-g`` if ``g.Hg = 0``), so
    the result is always a descent direction of a sensible length. Returns
    ``(p, iterations)``.
    """
    z = torch.zeros_like(g)
    r = g.clone()
    d = -r
    rr = float(torch.dot(r, r))
    for j in range(max_iter):
        if math.sqrt(rr) <= tol:
            return z, j
        bd = hvp(d)
        kappa = float(torch.dot(d, bd))
        if kappa <= 0 or not math.isfinite(kappa):
            if j == 0:
                scale = rr / abs(kappa) if kappa != 0 and math.isfinite(kappa) else 1.0
                return -scale * g, 1
            return z, j + 1
        alpha = rr / kappa
        z.add_(d, alpha=alpha)
        r.add_(bd, alpha=alpha)
        rr_new = float(torch.dot(r, r))
        d = -r + (rr_new / rr) * d
        rr = rr_new
    return z, max_iter


def _to_boundary(z: torch.Tensor, d: torch.Tensor, radius: float) -> float:
    """The positive ``tau`` with ``||z + tau d|| = radius``."""
    dd = float(torch.dot(d, d))
    zd = float(torch.dot(z, d))
    zz = float(torch.dot(z, z))
    return (-zd + math.sqrt(max(zd * zd + dd * (radius * radius - zz), 0.0))) / dd


def steihaug_cg(hvp: HVP, g: torch.Tensor, radius: float, tol: float, max_iter: int
                ) -> tuple[torch.Tensor, float, int]:
    """Steihaug's CG for the trust-region subproblem ``min g.p + p.Hp/2, ||p|| <= radius``.

    N&W Alg. 7.2: CG from ``p = 0``; on negative curvature, or when the next
    iterate would leave the region, returns the point where the current CG
    direction meets the boundary. Returns ``(p, m(p), iterations)`` with the model
    value ``m(p) = g.p + p.Hp/2`` computed from quantities CG already has (no extra
    Hessian-vector product).
    """
    z = torch.zeros_like(g)
    r = g.clone()  # r = g + H z
    d = -r
    rr = float(torch.dot(r, r))

    def model(p: torch.Tensor, hp: torch.Tensor) -> float:
        return float(torch.dot(g, p)) + 0.5 * float(torch.dot(p, hp))

    for j in range(max_iter):
        if math.sqrt(rr) <= tol:
            return z, model(z, r - g), j
        bd = hvp(d)
        kappa = float(torch.dot(d, bd))
        if kappa <= 0 or not math.isfinite(kappa):
            tau = _to_boundary(z, d, radius)
            p = z + tau * d
            return p, model(p, (r - g) + tau * bd), j + 1
        alpha = rr / kappa
        z_next = z + alpha * d
        if float(z_next.norm()) >= radius:
            tau = _to_boundary(z, d, radius)
            p = z + tau * d
            return p, model(p, (r - g) + tau * bd), j + 1
        z = z_next
        r.add_(bd, alpha=alpha)
        rr_new = float(torch.dot(r, r))
        d = -r + (rr_new / rr) * d
        rr = rr_new
    return z, model(z, r - g), max_iter


class NewtonCG(ClosureOptimizer):
    r"""Newton-CG ("Hessian-free"): Newton steps solved by truncated CG on ``H v`` products.

    Each iteration solves ``H_k p = -g_k`` approximately by conjugate gradients,
    using only Hessian-vector products, to the relative accuracy of the forcing
    sequence
    ``||H p + g|| <= min(0.5, sqrt(||g||)) ||g||`` (superlinear convergence,
    N&W Thm. 7.2), or ``cg_tol * ||g||`` if ``cg_tol`` is given.

    * **Line-search variant** (default, N&W Alg. 7.1): CG stops at negative
      curvature (scaled steepest descent if it happens on the first CG step), and
      a line search along ``lr * p`` starts from
      ``min(1, 1.01 * 2 (f_k - f_{k-1}) / g.p)`` (N&W eq. 3.60): the Newton step,
      unless the last decrease predicts that a shorter one will do. (This
      initial step saves backtracking on Rosenbrock-like valleys, where a
      truncated Newton step overshoots; scipy's Newton-CG uses the same guess.)
    * **Trust-region variant** (``trust_region=True``, Steihaug–Toint CG, N&W
      Alg. 7.2 inside Alg. 4.1): ``p`` minimises the quadratic model within
      ``||p|| <= radius``; negative curvature sends ``p`` to the boundary, so the
      method leaves saddle points where a line-search Newton method may stall.
      The ratio ``rho = (f(x) - f(x+p)) / (m(0) - m(p))`` decides: ``rho < 1/4``
      shrinks the radius to a quarter, ``rho > 3/4`` with ``p`` on the boundary
      doubles it (up to ``max_radius``); the step is taken if ``rho > eta``. A
      rejected step costs one extra closure call to rebuild the graph at ``x``
      (none with finite differences).

    Closure protocol: the standard one of every closure optimizer
    (``closure()`` zeroes the gradients, computes the loss, calls
    ``loss.backward()`` and returns the loss), or one that returns the loss
    **without** calling backward, or calls ``loss.backward(create_graph=True)``.
    How Hessian-vector products are taken (``hvp``):

    * ``"auto"`` (default): by double backward (Pearlmutter's ``R``-operator)
      when the closure leaves a graph (loss-only or ``create_graph=True``
      closures; about the cost of one extra backward each, no closure call);
      when the closure has called plain ``backward()``, by a forward difference
      of gradients, ``H v ~ (g(x + h v) - g(x)) / h`` as scipy's Newton-CG does
      without ``hessp`` — **one extra closure call (forward + backward) per
      product**, i.e. per CG iteration, accurate to about ``1e-8`` relative in
      float64 (``3e-4`` in float32);
    * ``"autograd"``: double backward only (a plain-``backward`` closure is an
      error);
    * ``"finite_difference"``: always differences (no graph is ever built:
      less memory, for closures whose double backward is slow or unsupported).

    The closure is called once at the start of ``step`` and once per
    line-search trial or trust-region trial (at most ``max_eval`` times,
    ``max_iter`` iterations), plus once per Hessian-vector product with finite
    differences. Products are counted in ``state["hvp_evals"]``, other closure
    calls in ``state["func_evals"]`` (the ``max_eval`` budget). ``step()``
    without a closure raises ``TypeError``. Returns what the first closure
    call returned.

    Stops early when ``max |g| <= tolerance_grad``, ``max |step| <=
    tolerance_change``, the loss changes by less than ``tolerance_change``, or
    the line search fails (``state["line_search_failures"]``).

    Args:
        params: parameters or groups (all groups form one vector; a group's
            ``lr`` scales its part of the line-search direction; other settings
            come from the first group).
        lr: step scale of the line-search variant (default 1, the Newton step);
            the trust-region variant ignores it (the radius sets the step).
        max_iter: iterations per ``step`` (default 20).
        max_eval: closure calls per ``step`` (default ``max_iter * 5 // 4``).
        tolerance_grad, tolerance_change: as in ``torch.optim.LBFGS``.
        cg_max_iter: CG iterations per Newton step (default: the number of
            parameters, capped at 500).
        cg_tol: fixed relative CG tolerance instead of the forcing sequence.
        line_search: line search for the line-search variant (default
            ``"armijo"``: backtracking from the Newton step).
        trust_region: use the Steihaug trust-region variant.
        radius, max_radius, eta: initial and largest trust radius, acceptance
            threshold (defaults 1, 1e4, 0.15).
        hvp: ``"auto"``, ``"autograd"`` or ``"finite_difference"`` (above).

    References: Nocedal & Wright, *Numerical Optimization*, 2nd ed., ch. 4 and
    7.1; J. Martens, "Deep learning via Hessian-free optimization", ICML 2010;
    T. Steihaug, SIAM J. Numer. Anal. 20 (1983).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        cg_max_iter: int | None = None,
        cg_tol: float | None = None,
        line_search: str | LineSearch = "armijo",
        trust_region: bool = False,
        radius: float = 1.0,
        max_radius: float = 1e4,
        eta: float = 0.15,
        hvp: str = "auto",
    ) -> None:
        check_learning_rate(lr)
        max_eval = check_limits(max_iter, max_eval, tolerance_grad, tolerance_change)
        if cg_max_iter is not None:
            check_int("cg_max_iter", cg_max_iter, minimum=1)
        if cg_tol is not None:
            check_interval("cg_tol", cg_tol, 0.0, 1.0, low_closed=False, high_closed=False)
        if not isinstance(trust_region, bool):
            raise TypeError(f"trust_region must be a bool, got {trust_region!r}")
        check_positive("radius", radius)
        check_positive("max_radius", max_radius)
        if radius > max_radius:
            raise ValueError(f"radius must be <= max_radius, got {radius!r} > {max_radius!r}")
        check_interval("eta", eta, 0.0, 0.25, high_closed=False)
        resolve_line_search(line_search, allow_none=False)  # refuse a bad name now
        check_hvp_mode(hvp)
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                        tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                        cg_max_iter=cg_max_iter, cg_tol=cg_tol, line_search=line_search,
                        trust_region=trust_region, radius=radius, max_radius=max_radius,
                        eta=eta, hvp=hvp)
        super().__init__(params, defaults)

    def _cg_settings(self, gnorm: float) -> tuple[float, int]:
        group = self.param_groups[0]
        rel = group["cg_tol"] if group["cg_tol"] is not None else min(0.5, math.sqrt(gnorm))
        n = sum(p.numel() for p in self._params())
        cg_max = group["cg_max_iter"] if group["cg_max_iter"] is not None else min(n, 500)
        return rel * gnorm, cg_max

    def _iterate(self, closure: Callable[[], Any]) -> Any:
        """Run up to ``max_iter`` Newton-CG iterations (see the class docstring)."""
        group, state = self._begin_step(hvp_evals=0, line_search_failures=0, cg_iters=0,
                                        radius=self.param_groups[0]["radius"])
        search = self._line_search()
        tol_grad, tol_change = group["tolerance_grad"], group["tolerance_change"]
        lr = self._lr()
        start = state["func_evals"]

        ev = self._evaluate(closure, create_graph=True)
        orig_loss = ev.loss
        x = self._flat_params()
        for _ in range(group["max_iter"]):
            if float(ev.g.abs().max()) <= tol_grad:
                break
            state["n_iter"] += 1
            tol, cg_max = self._cg_settings(float(ev.g.norm()))
            f_prev = ev.f
            if group["trust_region"]:
                radius = state["radius"]
                p, m_p, its = steihaug_cg(self._hvp(ev, closure, x), ev.g, radius, tol, cg_max)
                state["cg_iters"] += its
                set_params(self._params(), x + p)
                new_ev = self._evaluate(closure, create_graph=True)
                pred = -m_p
                actual = ev.f - new_ev.f
                ratio = actual / pred if pred > 0 else -math.inf
                pnorm = float(p.norm())
                if not math.isfinite(new_ev.f) or ratio < 0.25:
                    state["radius"] = 0.25 * min(radius, pnorm) if pnorm > 0 else 0.25 * radius
                elif ratio > 0.75 and pnorm >= 0.99 * radius:
                    state["radius"] = min(2.0 * radius, group["max_radius"])
                if math.isfinite(new_ev.f) and ratio > group["eta"]:
                    ev, x_new = new_ev, self._flat_params()
                else:
                    set_params(self._params(), x)
                    if self._graph:  # rebuild the graph at x; differences reuse ev's gradient
                        ev = self._evaluate(closure, create_graph=True)
                    x_new = x
                    if state["radius"] < 1e-12 * max(1.0, float(x.norm())):
                        break
                step_vec = x_new - x
                x = x_new
                if step_vec.abs().max() == 0:
                    if state["func_evals"] - start >= group["max_eval"]:
                        break
                    continue
            else:
                p, its = truncated_cg(self._hvp(ev, closure, x), ev.g, tol, cg_max)
                state["cg_iters"] += its
                d = p * lr
                t0 = interpolated_initial_step(ev.f, state.get("f_prev"), float(torch.dot(ev.g, d)))
                state["f_prev"] = ev.f
                res, new_ev = self._run_line_search(closure, search, x, ev, d, t0,
                                                    need_graph=True)
                if not res.success:
                    state["line_search_failures"] += 1
                    if res.step == 0.0:
                        break
                x_new = self._flat_params()
                step_vec = x_new - x
                ev, x = new_ev, x_new
            if state["func_evals"] - start >= group["max_eval"]:
                break
            if float(step_vec.abs().max()) <= tol_change:
                break
            if abs(ev.f - f_prev) < tol_change:
                break
        return orig_loss
