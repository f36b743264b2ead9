"""Inverse p-th roots of symmetric positive semi-definite matrices, for Shampoo.

Two methods, as ``pytorch_optimizer.ScalableShampoo`` offers them:

* :func:`inverse_root_schur_newton` — the coupled Newton iteration of Guo &
  Higham (2006) for A^(−1/p), run on A + ε λ_max(A) I (λ_max by power
  iteration from a random start drawn from torch's global generator), stopped
  once ‖M − I‖_∞ ≤ 10⁻³ or when the residual grows by more than 1.2×. It is
  an *approximate* root (about three correct digits): Distributed Shampoo's
  eigendecomposition, or :func:`inverse_root_svd`, differ from it by up to
  ~10⁻³ relative, so parity with the reference needs this same method.
* :func:`inverse_root_svd` — U diag(σ^(−1/p)) Vᵀ from an SVD (exact to
  rounding; batched over a leading dimension).

The iteration is written operation for operation as the reference computes it
(the same products, norms and stopping tests), so float64 runs agree to
rounding, and it draws the same random start.

Reference: C.-H. Guo and N. J. Higham, "A Schur–Newton method for the matrix
p-th root and its inverse", SIAM J. Matrix Anal. Appl. 28(3), 2006.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["largest_eigenvalue", "inverse_root_schur_newton", "inverse_root_svd"]


def largest_eigenvalue(matrix: Tensor, iterations: int = 100) -> Tensor:
    """λ_max of a PSD matrix by ``iterations`` power-iteration steps (≥ 10⁻¹⁶, a 0-dim tensor).

    The start vector is drawn from torch's global generator.
    """
    v = torch.randn(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)
    tiny = torch.finfo(matrix.dtype).tiny
    for _ in range(iterations):
        w = torch.mv(matrix, v)
        v = w.div_(torch.linalg.vector_norm(w).clamp_min_(tiny))
    return torch.dot(v, torch.mv(matrix, v)).clamp_min_(1e-16)


def inverse_root_schur_newton(
    matrix: Tensor,
    p: int,
    ridge_epsilon: float = 1e-6,
    max_iterations: int = 100,
    tolerance: float = 1e-3,
    max_error_ratio: float = 1.2,
) -> Tensor:
    """(A + ε λ_max I)^(−1/p) by the coupled Newton (Schur–Newton) iteration.

    With z = (1 + p)/(2‖A‖_F), X₀ = z^(1/p) I and M₀ = z A, each iteration
    takes T = ((1 + 1/p) I − M/p), X ← X T, M ← Tᵖ M; it stops when
    ‖M − I‖_∞ ≤ ``tolerance`` (returning the new X) or when that residual
    exceeds ``max_error_ratio`` times the previous one (returning the old X).
    A 1×1 matrix a gives (a + ε max(a, 10⁻¹⁶))^(−1/p) directly.
    """
    n = matrix.shape[0]
    identity = torch.eye(n, dtype=matrix.dtype, device=matrix.device)
    if n == 1:
        return (matrix + ridge_epsilon * matrix.clamp_min(1e-16)).pow(-1.0 / p)
    matrix = matrix + largest_eigenvalue(matrix) * ridge_epsilon * identity
    z = (1 + p) / (2 * torch.linalg.norm(matrix))
    root = identity * torch.pow(z, 1.0 / p)
    m = matrix * z
    alpha = -1.0 / p
    shifted_identity = (1.0 - alpha) * identity
    previous = torch.dist(m, identity, p=torch.inf)
    for _ in range(max_iterations):
        t = torch.add(shifted_identity, alpha * m)
        new_root = torch.matmul(root, t)
        new_m = torch.matmul(torch.linalg.matrix_power(t, p), m)
        error = torch.dist(new_m, identity, p=torch.inf)
        if bool(error > previous * max_error_ratio):
            return root
        if bool(error <= tolerance):
            return new_root
        root, m, previous = new_root, new_m, error
    return root


def inverse_root_svd(matrix: Tensor, p: float) -> Tensor:
    """U diag(σ)^(−1/p) Vᵀ of (a batch of) matrices, computed in float32 at least."""
    wide = torch.float64 if matrix.dtype == torch.float64 else torch.float32
    u, s, vh = torch.linalg.svd(matrix.to(wide), full_matrices=False)
    return ((u * s.pow(-1.0 / p).unsqueeze(-2)) @ vh).to(matrix.dtype)
