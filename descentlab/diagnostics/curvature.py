"""Curvature of the loss: Hessian-vector products and the spectrum they reveal.

Everything here touches the Hessian ``H = ∇²L(θ)`` only through products
``Hv`` (Pearlmutter's trick: differentiate ``gᵀv`` once more), so memory is a
few parameter vectors, never ``n × n``.

* :class:`HessianOperator` — ``H`` as a linear operator on flat vectors.
* :func:`power_iteration` — top-k eigenvalues *by magnitude*, with deflation.
* :func:`lanczos` / :func:`extreme_eigenvalues` — top-k and bottom-k
  (algebraic) eigenvalues from a Krylov space with full re-orthogonalisation.
* :func:`hutchinson_trace` — ``tr H ≈ mean(vᵀHv)`` over Rademacher ``v``,
  with its standard error.
* :func:`spectral_density` — stochastic Lanczos quadrature (Ghorbani, Krishnan
  & Xiao 2019; Lin, Saad & Yang 2016).
* :func:`saddle_check`, :func:`edge_of_stability` — turn numbers into findings.

PyHessian (Yao et al. 2020) does the same with power iteration; its Lanczos
density code is the reference point, but it is unmaintained. Numbers are
validated in the tests against ``torch.autograd.functional.hessian`` +
``torch.linalg.eigvalsh``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from descentlab.diagnostics.findings import Finding, FindingKind, Severity
from descentlab.optim.validation import check_int, check_positive

__all__ = [
    "HessianOperator",
    "SpectralDensity",
    "TraceEstimate",
    "edge_of_stability",
    "extreme_eigenvalues",
    "hutchinson_trace",
    "lanczos",
    "power_iteration",
    "saddle_check",
    "spectral_density",
]


class HessianOperator:
    """The Hessian of ``loss_fn()`` with respect to ``params``, as a linear operator.

    Args:
        loss_fn: a closure returning the scalar loss at the current
            parameters (fixed data: the Hessian of *that* loss).
        params: the parameters (leaf tensors with ``requires_grad``).

    The gradient graph is built once (``create_graph=True``); each
    :meth:`matvec` is one extra backward pass. Vectors are flat, in the
    order of ``params``, of length :attr:`size`.
    """

    def __init__(self, loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor]):
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("params has no tensor that requires grad")
        loss = loss_fn()
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a scalar tensor, got {got}")
        self.loss = float(loss.detach())
        grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        self._grads = [
            torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads, strict=True)
        ]
        self.gradient = torch.cat([g.detach().reshape(-1) for g in self._grads])
        self.size = self.gradient.numel()
        self.dtype, self.device = self.gradient.dtype, self.gradient.device
        self.calls = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for a flat vector ``v`` of length :attr:`size`."""
        if v.shape != (self.size,):
            raise ValueError(f"v must have shape ({self.size},), got {tuple(v.shape)}")
        parts, i = [], 0
        for p in self.params:
            parts.append(v[i : i + p.numel()].view_as(p).to(p.dtype))
            i += p.numel()
        hv = torch.autograd.grad(
            self._grads, self.params, grad_outputs=parts, retain_graph=True, allow_unused=True
        )
        self.calls += 1
        return torch.cat(
            [
                torch.zeros(p.numel(), dtype=self.dtype, device=self.device)
                if h is None
                else h.detach().reshape(-1)
                for p, h in zip(self.params, hv, strict=True)
            ]
        )

    __matmul__ = matvec

    def random(self, generator: torch.Generator, kind: str = "rademacher") -> torch.Tensor:
        """A random vector: Rademacher (±1) or standard Gaussian."""
        if kind == "rademacher":
            r = torch.randint(0, 2, (self.size,), generator=generator, dtype=torch.int64)
            return (2 * r - 1).to(self.dtype)
        if kind == "gaussian":
            return torch.randn(self.size, generator=generator, dtype=self.dtype)
        raise ValueError(f"kind must be 'rademacher' or 'gaussian', got {kind!r}")


Operator = HessianOperator | Callable[[torch.Tensor], torch.Tensor]


def _mv(op: Operator) -> Callable[[torch.Tensor], torch.Tensor]:
    return op.matvec if isinstance(op, HessianOperator) else op


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def power_iteration(
    op: HessianOperator,
    k: int = 1,
    *,
    max_iter: int = 200,
    tol: float = 1e-6,
    seed: int = 0,
) -> tuple[list[float], list[torch.Tensor]]:
    """The ``k`` eigenvalues of largest *magnitude* by power iteration with deflation.

    For ``j = 1..k``: iterate ``v ← (H − Σ_{i<j} λ_i u_i u_iᵀ) v / ‖·‖`` until
    the Rayleigh quotient changes by less than ``tol`` (relative). Deflation
    removes the eigenpairs already found. Converges at the rate
    ``|λ_{j+1}/λ_j|`` — slow for close eigenvalues; prefer :func:`lanczos`.
    Returns eigenvalues (in the order found) and unit eigenvectors.
    """
    check_int("k", k, minimum=1)
    check_int("max_iter", max_iter, minimum=1)
    check_positive("tol", tol)
    if k > op.size:
        raise ValueError(f"k must be <= the number of parameters {op.size}, got {k}")
    g = _gen(seed)
    values: list[float] = []
    vectors: list[torch.Tensor] = []
    for _ in range(k):
        v = op.random(g, "gaussian")
        v /= torch.linalg.vector_norm(v)
        lam = math.nan
        for _ in range(max_iter):
            for u in vectors:
                v -= (u @ v) * u
            hv = op.matvec(v)
            for lam_i, u in zip(values, vectors, strict=True):
                hv -= lam_i * (u @ v) * u
            new = float(v @ hv)
            norm = torch.linalg.vector_norm(hv)
            if norm == 0:
                lam = 0.0
                break
            v = hv / norm
            if math.isfinite(lam) and abs(new - lam) <= tol * max(abs(new), 1e-30):
                lam = new
                break
            lam = new
        values.append(lam)
        vectors.append(v)
    return values, vectors


def lanczos(
    op: Operator,
    size: int,
    steps: int,
    *,
    v0: torch.Tensor | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``steps`` Lanczos iterations with full re-orthogonalisation.

    Builds an orthonormal basis ``Q`` of the Krylov space
    ``span{v0, Hv0, …, H^{m−1}v0}`` and the tridiagonal ``T = QᵀHQ``
    (``alpha`` on the diagonal, ``beta`` off it). Full re-orthogonalisation
    (Gram–Schmidt against every previous vector, twice) keeps ``Q``
    orthonormal in floating point, at ``O(m·n)`` memory. Stops early if the
    space becomes invariant. Returns ``(T, Q)`` with ``Q`` of shape
    ``(m, n)``; the basis is accumulated in ``dtype`` (float64 default).
    """
    check_int("steps", steps, minimum=1)
    steps = min(steps, size)
    mv = _mv(op)
    v = torch.randn(size, generator=_gen(seed), dtype=dtype) if v0 is None else v0.to(dtype)
    v = v / torch.linalg.vector_norm(v)
    qs = [v]
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    for j in range(steps):
        w = mv(qs[j]).to(dtype)
        a = qs[j] @ w
        alphas.append(a)
        Q = torch.stack(qs)
        for _ in range(2):
            w = w - Q.T @ (Q @ w)
        if j == steps - 1:
            break
        b = torch.linalg.vector_norm(w)
        if b <= 1e-10 * max(float(a.abs()), 1.0):
            break
        betas.append(b)
        qs.append(w / b)
    m = len(alphas)
    T = torch.diag(torch.stack(alphas))
    if m > 1:
        off = torch.stack(betas[: m - 1])
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    return T, torch.stack(qs[:m])


def extreme_eigenvalues(
    op: HessianOperator,
    k: int = 1,
    *,
    steps: int | None = None,
    which: str = "both",
    seed: int = 0,
) -> dict[str, list[float]]:
    """The ``k`` largest and/or smallest (algebraic) Hessian eigenvalues by Lanczos.

    Ritz values of a Lanczos run of ``steps`` iterations (default
    ``min(n, max(4k + 20, 40))``) approximate the extreme eigenvalues first.
    ``which`` is ``"largest"``, ``"smallest"`` or ``"both"``; returns
    ``{"largest": [...descending], "smallest": [...ascending]}``.
    A negative smallest eigenvalue means negative curvature (a saddle if the
    gradient is small).
    """
    check_int("k", k, minimum=1)
    if which not in ("largest", "smallest", "both"):
        raise ValueError(f"which must be 'largest', 'smallest' or 'both', got {which!r}")
    if k > op.size:
        raise ValueError(f"k must be <= the number of parameters {op.size}, got {k}")
    m = steps if steps is not None else min(op.size, max(4 * k + 20, 40))
    T, _ = lanczos(op, op.size, m, seed=seed)
    ritz = torch.linalg.eigvalsh(T)
    out: dict[str, list[float]] = {}
    if which in ("largest", "both"):
        out["largest"] = [float(x) for x in ritz.flip(0)[:k]]
    if which in ("smallest", "both"):
        out["smallest"] = [float(x) for x in ritz[:k]]
    return out


@dataclasses.dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's estimate of ``tr H`` with its standard error ``std / √samples``."""

    value: float
    stderr: float
    samples: int

    def interval(self, z: float = 3.0) -> tuple[float, float]:
        """``value ± z·stderr`` (z=3: about 99.7% under the normal approximation)."""
        return self.value - z * self.stderr, self.value + z * self.stderr


def hutchinson_trace(
    op: HessianOperator, samples: int = 100, *, seed: int = 0, kind: str = "rademacher"
) -> TraceEstimate:
    """Hutchinson's estimator ``tr H ≈ (1/s) Σ vᵢᵀ H vᵢ``, ``E[vvᵀ] = I``.

    Rademacher vectors (default) give the smallest variance among i.i.d.
    choices: ``Var = 2 Σ_{i≠j} H_ij²``. The standard error is the sample
    standard deviation over ``√samples``.
    """
    check_int("samples", samples, minimum=2)
    g = _gen(seed)
    xs = []
    for _ in range(samples):
        v = op.random(g, kind)
        xs.append(float(v @ op.matvec(v)))
    t = torch.tensor(xs, dtype=torch.float64)
    return TraceEstimate(float(t.mean()), float(t.std() / math.sqrt(samples)), samples)


@dataclasses.dataclass
class SpectralDensity:
    """Stochastic Lanczos quadrature: per probe vector, nodes and weights.

    ``nodes[i]``, ``weights[i]`` are the Ritz values and squared first
    components of the eigenvectors of the tridiagonal matrix of probe ``i``;
    each set of weights sums to 1. The density is
    ``φ(t) = (1/p) Σ_i Σ_j w_ij · N(t; θ_ij, σ²)``.
    """

    nodes: list[torch.Tensor]
    weights: list[torch.Tensor]

    def density(self, grid: torch.Tensor, sigma: float) -> torch.Tensor:
        """The Gaussian-smoothed density on ``grid`` (integrates to 1 over the real line)."""
        check_positive("sigma", sigma)
        grid = grid.to(torch.float64)
        out = torch.zeros_like(grid)
        for th, w in zip(self.nodes, self.weights, strict=True):
            z = (grid[:, None] - th[None, :]) / sigma
            out += (w[None, :] * torch.exp(-0.5 * z**2)).sum(1)
        return out / (len(self.nodes) * sigma * math.sqrt(2 * math.pi))

    def moment(self, j: int) -> float:
        """``(1/p) Σ_i Σ_k w_ik θ_ik^j`` ≈ ``tr(H^j)/n`` (exact per probe for ``j < 2m``)."""
        return float(
            sum((w * th**j).sum() for th, w in zip(self.nodes, self.weights, strict=True))
        ) / len(self.nodes)

    def plot(self, ax: Any = None, sigma: float | None = None, points: int = 400) -> Any:
        """Plot the density (log scale) with matplotlib; returns the axes."""
        import matplotlib.pyplot as plt

        lo = min(float(t.min()) for t in self.nodes)
        hi = max(float(t.max()) for t in self.nodes)
        pad = 0.05 * (hi - lo) + 1e-12
        s = sigma if sigma is not None else max((hi - lo) / 100, 1e-8)
        grid = torch.linspace(lo - pad, hi + pad, points, dtype=torch.float64)
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        ax.semilogy(grid.numpy(), self.density(grid, s).clamp_min(1e-12).numpy())
        ax.set_xlabel("eigenvalue")
        ax.set_ylabel("density")
        ax.set_title("Hessian eigenvalue density (SLQ)")
        return ax


def spectral_density(
    op: HessianOperator, probes: int = 4, steps: int = 40, *, seed: int = 0
) -> SpectralDensity:
    """Estimate the Hessian's eigenvalue density by stochastic Lanczos quadrature.

    For each of ``probes`` Rademacher vectors ``v`` (normalised), ``steps``
    Lanczos iterations give ``T = U diag(θ) Uᵀ``; Gauss quadrature nodes are
    ``θ`` and weights ``U[0, :]²``, so that ``vᵀ f(H) v ≈ Σ_k U[0,k]² f(θ_k)``,
    exact for polynomials of degree below ``2·steps``.
    """
    check_int("probes", probes, minimum=1)
    check_int("steps", steps, minimum=1)
    g = _gen(seed)
    nodes, weights = [], []
    for _ in range(probes):
        v = op.random(g, "rademacher").to(torch.float64)
        T, _ = lanczos(op, op.size, steps, v0=v)
        theta, U = torch.linalg.eigh(T)
        nodes.append(theta)
        weights.append(U[0, :] ** 2)
    return SpectralDensity(nodes, weights)


def saddle_check(
    op: HessianOperator,
    *,
    grad_tol: float = 1e-3,
    curvature_tol: float = 1e-3,
    step: int = -1,
    seed: int = 0,
) -> Finding | None:
    """Report a saddle point: small gradient and a clearly negative eigenvalue.

    Fires when ``‖g‖ ≤ grad_tol`` and ``λ_min < −curvature_tol · max(|λ_max|, 1)``.
    With a negative eigenvalue but a large gradient, nothing is reported (the
    optimizer is simply on a slope with negative curvature). Evidence holds
    ``λ_min``, ``λ_max`` and ``‖g‖``; the remedy is seed 001's: step along the
    negative-curvature direction or add random perturbations.
    """
    check_positive("grad_tol", grad_tol)
    check_positive("curvature_tol", curvature_tol)
    ev = extreme_eigenvalues(op, 1, which="both", seed=seed)
    lmin, lmax = ev["smallest"][0], ev["largest"][0]
    gnorm = float(torch.linalg.vector_norm(op.gradient))
    if gnorm > grad_tol or not lmin < -curvature_tol * max(abs(lmax), 1.0):
        return None
    return Finding(
        FindingKind.SADDLE_POINT,
        Severity.WARNING,
        step,
        f"the gradient is nearly zero (‖g‖ = {gnorm:.2e}) but the Hessian has a negative "
        f"eigenvalue λ_min = {lmin:.4g}: a saddle point, not a minimum",
        {"lambda_min": lmin, "lambda_max": lmax, "grad_norm": gnorm, "loss": op.loss},
        "escape along the negative-curvature direction or with small random perturbations "
        "(perturbed gradient descent); momentum and adaptive methods also leave saddles faster; "
        "avoid all-zero initialisation",
    )


def edge_of_stability(
    lambda_max: float, lr: float, *, step: int = -1, margin: float = 0.9
) -> Finding | None:
    """Compare ``λ_max · lr`` with 2, the stability limit of gradient descent.

    On a quadratic, GD with step ``lr`` diverges along the top eigenvector
    when ``lr · λ_max > 2``; full-batch training tends to drive the sharpness
    up to about ``2/lr`` and hover there, the *edge of stability* (Cohen et
    al., ICLR 2021). Returns a warning above 2, an info finding above
    ``2·margin`` (default 1.8), else ``None``. For momentum SGD the limit is
    ``2(1+β)/lr``; for adaptive methods use the preconditioned Hessian —
    this check is for plain (S)GD.
    """
    check_positive("lr", lr)
    x = lambda_max * lr
    if x < 2 * margin:
        return None
    above = x > 2
    return Finding(
        FindingKind.EDGE_OF_STABILITY,
        Severity.WARNING if above else Severity.INFO,
        step,
        f"λ_max · lr = {x:.3g} {'exceeds' if above else 'is close to'} 2: gradient descent is "
        f"{'unstable' if above else 'at the edge of stability'} along the sharpest direction",
        {"lambda_max": lambda_max, "lr": lr, "product": x, "limit": 2.0},
        f"keep lr below 2/λ_max = {2 / lambda_max:.3g} for monotone descent, or accept "
        "edge-of-stability oscillation; warm-up and learning-rate decay lower the product",
    )
