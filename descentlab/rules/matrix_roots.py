"""Inverse p-th roots of symmetric positive semi-definite matrices, for Shampoo.

Two methods, as ``pytorch_optimizer.ScalableShampoo`` offers them:

* :func:`inverse_roots_schur_newton` — the coupled Newton iteration of Guo &
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
rounding, and it draws the same random starts. It runs over a stack of K
matrices at once, each matrix with the reference's bits:

* the products stay one ``mm`` per matrix (Tᵖ by ``matrix_power``'s own
  sequence of products, into reused matrices): torch's
  ``bmm`` rounds differently from ``mm`` for some sides (float32 9 and 11,
  most odd sides in float64; torch 2.13, MKL 2024.2, AVX-512), and MKL's ``mm`` and
  ``mv`` round differently when their *output* (``mm``) or their operands
  (``mv``, ``dot``) start at another address modulo 64 bytes, so every
  product is written to a matrix or vector that starts on a 64-byte boundary,
  as the reference's fresh tensors do (:func:`aligned_stack`);
* the rest is batched over the stack: the elementwise steps (exact per
  element, none fused), the power iteration's norms and divisions, the
  Frobenius norms (torch's last-dimension norm kernel: per matrix the same
  sum as a norm of that matrix alone), and the residual ‖M − I‖_∞ as
  ``amax(|M − I|)`` (a maximum is exact in any order: the same number as the
  reference's ``torch.dist(M, I, p=inf)``, ~9× faster on 256² matrices);
* the scalar steps per matrix that may take another code path when batched
  (``pow`` with a fractional exponent is vectorised with another rounding)
  stay per matrix, once per root;
* each matrix leaves the iteration at its own step, as the reference's does:
  the stack shrinks to the matrices still iterating.

Reference: C.-H. Guo and N. J. Higham, "A Schur–Newton method for the matrix
p-th root and its inverse", SIAM J. Matrix Anal. Appl. 28(3), 2006.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "aligned_stack",
    "largest_eigenvalue",
    "largest_eigenvalues",
    "inverse_root_schur_newton",
    "inverse_roots_schur_newton",
    "inverse_root_svd",
]

#: the alignment of a fresh CPU tensor (c10's allocator), which MKL's products see
_ALIGNMENT = 64


def aligned_stack(count: int, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised stack [count, *shape] of ``like``'s dtype and device whose every
    element tensor is contiguous and starts on a 64-byte boundary, as a fresh tensor does."""
    size = 1
    for s in shape:
        size *= s
    per = -(-size * like.element_size() // _ALIGNMENT) * _ALIGNMENT // like.element_size()
    buffer = torch.empty(count * per, dtype=like.dtype, device=like.device)
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    return buffer.as_strided((count, *shape), (per, *strides))


def largest_eigenvalues(matrices: Tensor, starts: Tensor, iterations: int = 100) -> Tensor:
    """λ_max of each PSD matrix of a stack [K, n, n] by ``iterations`` power-iteration steps
    from ``starts`` [K, n]: v ← Av/‖Av‖, then vᵀAv (≥ 10⁻¹⁶; a [K] tensor).

    Each matrix's products are its own ``mv`` into an aligned vector (the reference's bits);
    the norms and divisions are one call for the stack.
    """
    count, n = starts.shape
    v, w = aligned_stack(count, (n,), starts), aligned_stack(count, (n,), starts)
    v.copy_(starts)
    tiny = torch.finfo(matrices.dtype).tiny
    for _ in range(iterations):
        for k in range(count):
            torch.mv(matrices[k], v[k], out=w[k])
        w.div_(torch.linalg.vector_norm(w, dim=-1, keepdim=True).clamp_min_(tiny))
        v, w = w, v
    for k in range(count):
        torch.mv(matrices[k], v[k], out=w[k])
    return torch.stack([torch.dot(v[k], w[k]) for k in range(count)]).clamp_min_(1e-16)


def largest_eigenvalue(matrix: Tensor, iterations: int = 100) -> Tensor:
    """λ_max of a PSD matrix by ``iterations`` power-iteration steps (≥ 10⁻¹⁶, a 0-dim tensor).

    The start vector is drawn from torch's global generator.
    """
    start = torch.randn(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)
    return largest_eigenvalues(matrix[None], start[None], iterations)[0]


def _inverse_root_1x1(matrix: Tensor, p: int, ridge_epsilon: float) -> Tensor:
    """(a + ε max(a, 10⁻¹⁶))^(−1/p) of a 1×1 matrix a (the reference's shortcut)."""
    return (matrix + ridge_epsilon * matrix.clamp_min(1e-16)).pow(-1.0 / p)


def inverse_roots_schur_newton(
    matrices: Tensor,
    p: int,
    ridge_epsilon: float = 1e-6,
    max_iterations: int = 100,
    tolerance: float = 1e-3,
    max_error_ratio: float = 1.2,
    starts: Tensor | None = None,
) -> Tensor:
    """(A_k + ε λ_max(A_k) I)^(−1/p) of every matrix of a stack [K, n, n] by the coupled
    Newton (Schur–Newton) iteration; a new [K, n, n] tensor.

    With z = (1 + p)/(2‖A‖_F), X₀ = z^(1/p) I and M₀ = z A, each iteration
    takes T = ((1 + 1/p) I − M/p), X ← X T, M ← Tᵖ M; a matrix stops when
    ‖M − I‖_∞ ≤ ``tolerance`` (with the new X) or when that residual exceeds
    ``max_error_ratio`` times the previous one (with the old X). 1×1 matrices a
    give (a + ε max(a, 10⁻¹⁶))^(−1/p) directly. ``starts`` [K, n] are the power
    iterations' start vectors (default: drawn from torch's global generator,
    one matrix after the other, as the reference draws them). The stack is
    iterated in chunks of at most :data:`CHUNK_BYTES` per matrix buffer.
    """
    count, n = matrices.shape[0], matrices.shape[-1]
    if n == 1:
        return torch.stack([_inverse_root_1x1(a, p, ridge_epsilon) for a in matrices])
    if starts is None:
        starts = torch.stack([torch.randn(n, dtype=matrices.dtype, device=matrices.device)
                              for _ in range(count)])
    out = torch.empty(matrices.shape, dtype=matrices.dtype, device=matrices.device)
    chunk = min(count, max(1, CHUNK_BYTES // (n * n * matrices.element_size())))
    buffers = _Buffers(chunk, n, matrices)
    for first in range(0, count, chunk):
        part = slice(first, first + chunk)
        _coupled_newton(matrices[part], starts[part], out[part], p, ridge_epsilon,
                        max_iterations, tolerance, max_error_ratio, buffers)
    return out


#: the largest buffer of matrices :func:`inverse_roots_schur_newton` iterates at once (five
#: such buffers): a stack's elementwise steps and stopping tests are then one call per chunk
CHUNK_BYTES = 1 << 22


class _Buffers:
    """The aligned work matrices of the iteration, allocated once per call (a fresh
    buffer for every product faults its pages in each time)."""

    def __init__(self, chunk: int, n: int, like: Tensor) -> None:
        self.root, self.new_root, self.m, self.new_m, self.t = (
            aligned_stack(chunk, (n, n), like) for _ in range(5))
        self.powers = list(aligned_stack(3, (n, n), like))


def _matrix_power(a: Tensor, p: int, work: list[Tensor]) -> Tensor:
    """aᵖ (p ≥ 1) by the products ``torch.linalg.matrix_power`` makes, in its order (a·a for
    p = 2, (a·a)·a for p = 3, else squarings from the lowest bit of p up, each set bit's
    power multiplied into the result), written into the three ``work`` matrices."""
    if p == 1:
        return a
    if p == 2:
        return torch.mm(a, a, out=work[0])
    if p == 3:
        return torch.mm(torch.mm(a, a, out=work[1]), a, out=work[0])
    z = result = None
    while p > 0:
        bit, p = p % 2, p // 2
        if z is None:
            z = a
        else:
            z = torch.mm(z, z, out=next(w for w in work if w is not z and w is not result))
        if bit:
            result = z if result is None else torch.mm(
                result, z, out=next(w for w in work if w is not z and w is not result))
    return result


def _coupled_newton(matrices: Tensor, starts: Tensor, out: Tensor, p: int,
                    ridge_epsilon: float, max_iterations: int, tolerance: float,
                    max_error_ratio: float, buffers: _Buffers) -> None:
    """The iteration of :func:`inverse_roots_schur_newton` on a chunk, written into ``out``;
    the matrices still iterating are kept at the front of the buffers."""
    count, n = matrices.shape[0], matrices.shape[-1]
    b = buffers
    root, new_root, m, new_m, t = (x[:count] for x in (b.root, b.new_root, b.m, b.new_m, b.t))
    identity = torch.eye(n, dtype=matrices.dtype, device=matrices.device)
    eigenvalues = largest_eigenvalues(matrices, starts)
    ridged = torch.add(matrices, torch.mul((eigenvalues * ridge_epsilon).view(-1, 1, 1),
                                           identity, out=t), out=new_m)
    z = (1 + p) / (2 * torch.linalg.vector_norm(ridged, dim=(-2, -1)))
    scale = torch.stack([torch.pow(z[k], 1.0 / p) for k in range(count)])  # pow: per matrix
    torch.mul(identity, scale.view(-1, 1, 1), out=root)
    torch.mul(ridged, z.view(-1, 1, 1), out=m)
    alpha = -1.0 / p
    shifted_identity = (1.0 - alpha) * identity
    previous = torch.sub(m, identity, out=t).abs_().amax(dim=(-2, -1))
    active = list(range(count))  # the matrices at the front of the buffers, by index in the chunk
    for _ in range(max_iterations):
        j = len(active)
        t_j = torch.mul(m[:j], alpha, out=t[:j]).add_(shifted_identity)  # (1 − α)I + αM
        for k in range(j):
            torch.mm(root[k], t_j[k], out=new_root[k])
            torch.mm(_matrix_power(t_j[k], p, b.powers), m[k], out=new_m[k])
        error = torch.sub(new_m[:j], identity, out=t[:j]).abs_().amax(dim=(-2, -1))
        diverged = (error > previous * max_error_ratio).tolist()
        converged = (error <= tolerance).tolist()
        keep = []
        for k, index in enumerate(active):
            if diverged[k]:
                out[index].copy_(root[k])
            elif converged[k]:
                out[index].copy_(new_root[k])
            else:
                keep.append(k)
        if not keep:
            return
        root, new_root, m, new_m, previous = new_root, root, new_m, m, error
        if len(keep) < j:
            active = [active[k] for k in keep]
            root[:len(keep)] = root[keep]
            m[:len(keep)] = m[keep]
            previous = previous[keep]
    for k, index in enumerate(active):
        out[index].copy_(root[k])


def inverse_root_schur_newton(matrix: Tensor, p: int, **options: float) -> Tensor:
    """(A + ε λ_max I)^(−1/p) of one matrix by the coupled Newton iteration: the options
    (``ridge_epsilon``, ``max_iterations``, ``tolerance``, ``max_error_ratio``) and the
    method are :func:`inverse_roots_schur_newton`'s; the power iteration's start is drawn
    from torch's global generator."""
    return inverse_roots_schur_newton(matrix[None], p, **options)[0]


def inverse_root_svd(matrix: Tensor, p: float) -> Tensor:
    """U diag(σ)^(−1/p) Vᵀ of (a batch of) matrices, computed in float32 at least."""
    wide = torch.float64 if matrix.dtype == torch.float64 else torch.float32
    u, s, vh = torch.linalg.svd(matrix.to(wide), full_matrices=False)
    return ((u * s.pow(-1.0 / p).unsqueeze(-2)) @ vh).to(matrix.dtype)
