"""Adafactor: second moments factored into row and column statistics per matrix.

The specification of :class:`descentlab.Adafactor` (whose docstring gives the
equations, the reference and where implementations disagree). It is a *tensor*
rule: the row and column statistics are means over a matrix's last two
dimensions, and the step is scaled by the parameter's RMS and clipped by the
update's RMS, both norms over the whole tensor. It is batched: a stack
``[B, *shape]`` of same-shape parameters is updated together (the norms per
stacked tensor, the small row and column statistics with one call per
operation for the whole stack).

Where the speed comes from (torch's loop makes about 17 passes over each
matrix, and its column norms, a ``vector_norm`` over dim −2, are a strided
reduction several times slower than a pass): when no entry of V̂ is clamped
by ε₁² (checked exactly on the smallest R and C, since the rounded products
are monotone), 1/√V̂ᵢⱼ factors as aᵢbⱼ, so U = diag(a) G diag(b) is never
formed: ‖U‖² = Σᵢ aᵢ² Σⱼ (Gᵢⱼ bⱼ)², and θ ← θ·decay − diag(s·a) G diag(b).

* A stack of at least 2^16 elements is stepped by a small C library
  (:mod:`descentlab.rules.adafactor_kernel`, built by gcc in the background
  at first use) in three passes: G once for its row and column sums, then
  per tensor G and θ for ‖U‖ and ‖θ‖, then, from the thread's cache, the
  update of θ; the O(m + n) statistics in between stay here. Measured on
  24 × 384² (load 1.1, 2 threads) 3.07 ms a step against torch's 15.0.
* Until the library is ready, if it cannot be built, and for smaller
  stacks, the eager passes in torch work *tile by tile* (a few whole
  matrices, or a band of rows of a large one; :attr:`AdafactorRule.tile`
  elements, so most stacks are one tile): G² goes to a scratch buffer, its
  column sums give the tile's new C and its row sums read it back; then G
  diag(b) goes to the scratch buffer, its row norms give
  ‖U‖ = ‖a ⊙ (‖(G diag(b))ᵢ‖)ᵢ‖, and θ takes one ``addcmul`` of it with the
  row factors (θ read twice and written once, G twice, the scratch buffer
  written twice and read four times).

Either way the result agrees with torch's to rounding (over 60 steps under
every engine: float64 ≤ 1.7e-15, float32 ≤ 2.8e-7, the library and the eager
passes alike); when an entry is clamped (a row or column with no gradient
yet), the step is torch's entry by entry.

As torch.optim does, a tensor of two or more dimensions is factored over its
last two (leading dimensions are independent matrices: ``row_var`` has shape
``[..., m, 1]`` and ``col_var`` ``[..., 1, n]``), and a vector or scalar keeps
an unfactored ``variance`` of its own shape. Complex parameters are refused at
construction (torch.optim refuses them at the first step).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from descentlab.rules import adafactor_kernel as fused
from descentlab.rules.base import STRUCTURAL, Flags, HParam, Scalar, TensorRule
from descentlab.validation import check_interval, check_nonnegative

__all__ = ["AdafactorRule"]


def _check_eps(name: str, value: Any) -> tuple[float | None, float]:
    """(ε₁ or None, ε₂), each ≥ 0; None means the dtype's machine epsilon."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a tuple (eps1 or None, eps2), got {value!r}")
    eps1 = None if value[0] is None else check_nonnegative(f"{name}[0] (epsilon1)", value[0])
    return eps1, check_nonnegative(f"{name}[1] (epsilon2)", value[1])


def _check_beta2_decay(name: str, value: Any) -> float:
    return check_interval(name, value, -math.inf, 0.0)


def _check_d(name: str, value: Any) -> float:
    return check_interval(f"{name} (the clipping threshold)", value, 1.0, math.inf)


def _per_tensor(values: Tensor, like: Tensor) -> Tensor:
    """``values`` of shape [B] viewed to broadcast against a stack ``like`` of shape [B, ...]."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _at_least(low: float, values: Tensor) -> Tensor:
    """``max(low, v)`` of each value as Python's ``max`` takes it: a NaN gives ``low``."""
    return torch.where(values > low, values, low)


def _norms(stack: Tensor) -> tuple[Tensor, float]:
    """The 2-norm of each tensor of a stack [B, ...] in float64 (torch reads it as a Python
    float), and √(elements per tensor)."""
    flat = stack.reshape(stack.shape[0], -1)
    return torch.linalg.vector_norm(flat, dim=1).double(), flat.shape[1] ** 0.5


def _alpha(param: Tensor, eps2: float, rho: float) -> Tensor:
    """α = max(ε₂, RMS(θ))·ρ of each tensor of a stack, in float64."""
    norms, root = _norms(param)
    return _at_least(eps2, norms.div_(root)).mul_(rho)


class AdafactorRule(TensorRule):
    """β̂₂ = 1 − t^τ; ρ = min(lr, 1/√t); α = max(ε₂, RMS(θ))·ρ; θ ← θ(1 − lr·λ);
    R ← β̂₂R + (1−β̂₂)·mean_cols(G²), C ← β̂₂C + (1−β̂₂)·mean_rows(G²),
    V̂ = R C / max(mean(R), ε₁) (vectors: V̂ ← β̂₂V̂ + (1−β̂₂)G²);
    U = G / max(√V̂, ε₁);  θ ← θ − α · U / max(1, RMS(U)/d).
    """

    name = "adafactor"
    batched = True
    same_bits_on_any_thread_count = True
    hparams = (
        HParam("lr", 1e-2, check=check_nonnegative, doc="upper bound of the relative step ρ"),
        HParam("beta2_decay", -0.8, check=_check_beta2_decay, doc="τ of β̂₂ = 1 − t^τ (≤ 0)"),
        HParam("eps", (None, 1e-3), STRUCTURAL, check=_check_eps,
               doc="(ε₁ or None for the dtype's eps, ε₂)"),
        HParam("d", 1.0, check=_check_d, doc="clipping threshold d of the update's RMS"),
        HParam("weight_decay", 0.0, check=check_nonnegative, doc="decoupled weight decay λ"),
    )

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"eps": tuple(group["eps"])}

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        if param.dim() < 2:
            return {"variance": torch.zeros_like(param, memory_format=torch.preserve_format)}
        rows, cols = list(param.shape), list(param.shape)
        rows[-1], cols[-2] = 1, 1
        return {"row_var": param.new_zeros(rows), "col_var": param.new_zeros(cols)}

    #: Elements per tile: the passes over a stack are made tile by tile (a few whole tensors,
    #: or bands of rows of one matrix larger than a tile), each pass one call per tile. Large
    #: tiles pay: each tile's ‖U‖ and row factors are a dozen small calls, and a pass over a
    #: tile is a parallel region with several threads (measured with one thread, CPU time
    #: under load, 24 of 384²: 12.6 ms in tiles of 2^22, 15.8 ms in tiles of 2^18)
    tile = 1 << 22

    def update(self, param, grad, state, h, step, flags) -> None:
        if param[0].numel() == 0:
            return
        eps1, eps2 = flags["eps"]
        if eps1 is None:
            eps1 = torch.finfo(param.dtype).eps
        lr = h["lr"]
        weight = step ** h["beta2_decay"]  # 1 − β̂₂
        rho = min(lr, 1 / step**0.5)
        decay = 1 - lr * h["weight_decay"]
        if "variance" in state:  # vectors and scalars, a few at a time
            alpha = _alpha(param, eps2, rho)
            per = max(1, self.tile // param[0].numel())
            for a in range(0, len(param), per):
                part = slice(a, a + per)
                _step_unfactored(param[part], grad[part], state["variance"][part], alpha[part],
                                 weight, decay, eps1, h["d"])
            return
        row_var, col_var = state["row_var"], state["col_var"]
        stack = fused.stack(param, grad)
        if stack is not None:  # pass 1 of the library: row and column sums of G²
            row_sums, col_sums = fused.sums(stack)
            col_var.lerp_(col_sums.div_(grad.shape[-2]), weight)
        else:
            tiles = _Tiles(param, grad, self.tile)
            row_sums = torch.empty_like(row_var)  # Σⱼ G²ᵢⱼ of every row
            tiles.sums(col_var, row_sums, weight)
        row_var.lerp_(row_sums.div_(grad.shape[-1]), weight)
        row_mean = row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1)
        smallest = row_var.amin(dim=-2, keepdim=True) * col_var.amin(dim=-1, keepdim=True)
        clamped = not bool((smallest.div_(row_mean) >= eps1 * eps1).all())
        if clamped or stack is None:
            alpha = _alpha(param, eps2, rho)
        if clamped:
            # some V̂ᵢⱼ is clamped: the estimate entry by entry, as torch.optim computes it
            estimate = (row_var @ col_var).div_(row_mean)
            _step_along(param, estimate.clamp_(min=eps1 * eps1).rsqrt_().mul_(grad), alpha,
                        h["d"], decay)
            return
        # no entry is clamped: 1/√V̂ᵢⱼ = aᵢ bⱼ with a = (R/mean(R))^-½, b = C^-½, so
        # U = diag(a) G diag(b) is never formed: ‖U‖² = Σᵢ aᵢ² ‖(G diag(b))ᵢ‖², and
        # θ ← θ − diag(s·a) (G diag(b)) (s: α/clip of each tensor)
        rows, cols = (row_mean / row_var).sqrt_(), col_var.rsqrt()
        if stack is not None:  # passes 2 and 3 of the library (α from its ‖θ‖)
            fused.descend(stack, rows, cols, eps2, rho, h["d"], decay)
        else:
            tiles.step(rows, cols, alpha, h["d"], decay)


class _Tiles:
    """A stack of same-shape tensors [B, ..., m, n] cut into tiles for the passes over G and θ.

    A tile is a few whole tensors (about ``size`` elements), or, for tensors
    larger than that, a band of rows of one of their m × n matrices. One
    scratch buffer of a tile's size holds G² (then G diag(b)) of the tile in
    hand.
    """

    def __init__(self, param: Tensor, grad: Tensor, size: int) -> None:
        self.param, self.grad = param, grad
        self.m, self.n = grad.shape[-2], grad.shape[-1]
        each = param[0].numel()
        if each <= size:  # whole tensors, ``per`` at a time
            per = size // each
            self.whole = [slice(a, a + per) for a in range(0, len(param), per)]
            self.scratch = grad.new_empty(min(per, len(param)) * each)
        else:  # bands of ``band`` rows of each matrix
            band = max(1, size // self.n)
            self.whole = None
            self.bands = [(b, q, r, min(r + band, self.m))
                          for b in range(len(param))
                          for q in range(each // (self.m * self.n))
                          for r in range(0, self.m, band)]
            self.scratch = grad.new_empty(min(band, self.m) * self.n)

    def _work(self, like: Tensor) -> Tensor:
        return self.scratch[: like.numel()].view(like.shape)

    def _matrices(self, t: Tensor, b: int) -> Tensor:
        """Tensor ``b`` of a stack as [matrices, rows, cols] (a slot is contiguous: a view)."""
        return t[b].view(-1, *t.shape[-2:])

    def _band(self, t: Tensor, band: tuple[int, int, int, int]) -> Tensor:
        """Rows r … e−1 of matrix q of tensor b of a stack (or of its [..., m, 1] statistic)."""
        b, q, r, e = band
        return self._matrices(t, b)[q, r:e]

    def sums(self, col_var: Tensor, row_sums: Tensor, weight: float) -> None:
        """C ← lerp(C, mean_i G², weight) and ``row_sums`` ← Σⱼ G²ᵢⱼ, from one G² per tile."""
        grad, m = self.grad, self.m
        col_sums = torch.empty_like(col_var)
        if self.whole is not None:
            # per tile: G² once, its column sums, the tile's new C, then the row sums
            for t in self.whole:
                squares = torch.mul(grad[t], grad[t], out=self._work(grad[t]))
                torch.sum(squares, dim=-2, keepdim=True, out=col_sums[t])
                col_var[t].lerp_(col_sums[t].div_(m), weight)
                torch.sum(squares, dim=-1, keepdim=True, out=row_sums[t])
            return
        # bands of rows: the column sums of a matrix add up band by band
        for band in self.bands:
            g = self._band(grad, band)
            squares = torch.mul(g, g, out=self._work(g))
            total = self._matrices(col_sums, band[0])[band[1]]
            if band[2] == 0:
                torch.sum(squares, dim=-2, keepdim=True, out=total)
            else:
                total.add_(squares.sum(dim=-2, keepdim=True))
            torch.sum(squares, dim=-1, keepdim=True, out=self._band(row_sums, band))
        col_var.lerp_(col_sums.div_(m), weight)

    def step(self, rows: Tensor, cols: Tensor, alpha: Tensor, d: float, decay: float) -> None:
        """θ ← θ · decay − s · diag(a) G diag(b) per tensor, a = ``rows``, b = ``cols``, where
        s = α / max(1, RMS(U)/d) and ‖U‖² = Σᵢ aᵢ² ‖(G diag(b))ᵢ‖².

        A tile of whole tensors makes G diag(b) once, for ‖U‖ and for θ; bands make it
        twice (every band's rows before s is known).
        """
        param, grad = self.param, self.grad
        if self.whole is not None:
            for t in self.whole:
                scaled = torch.mul(grad[t], cols[t], out=self._work(grad[t]))
                a = rows[t]
                s = _row_scale(a, torch.linalg.vector_norm(scaled, dim=-1, keepdim=True),
                               alpha[t], d, self.n)
                _descend(param[t], scaled, a * _per_tensor(s, a), decay)
            return
        norms = torch.empty_like(rows)  # ‖(G diag(b))ᵢ‖ of every row, band by band
        for band in self.bands:
            g, c = self._band(grad, band), self._matrices(cols, band[0])[band[1]]
            scaled = torch.mul(g, c, out=self._work(g))
            torch.linalg.vector_norm(scaled, dim=-1, keepdim=True, out=self._band(norms, band))
        rows = rows * _per_tensor(_row_scale(rows, norms, alpha, d, self.n), rows)
        for band in self.bands:
            g, c = self._band(grad, band), self._matrices(cols, band[0])[band[1]]
            _descend(self._band(param, band), torch.mul(g, c, out=self._work(g)),
                     self._band(rows, band), decay)


def _row_scale(rows: Tensor, norms: Tensor, alpha: Tensor, d: float, n: int) -> Tensor:
    """s = α / max(1, RMS(U)/d) of each tensor of a stack, in the rows' dtype, given the row
    factors aᵢ and the row norms ‖(G diag(b))ᵢ‖ ([B, ..., m, 1] each; n columns): ‖U‖ is
    ‖a ⊙ norms‖."""
    u = torch.linalg.vector_norm((norms * rows).flatten(1), dim=1).double()
    return (alpha / _clip(u, rows[0].numel() * n, d)).to(rows.dtype)


def _descend(param: Tensor, scaled: Tensor, rows: Tensor, decay: float) -> None:
    """θ ← θ · decay − diag(rows) ``scaled`` (one tile)."""
    if decay != 1:
        param.mul_(decay)
    param.addcmul_(scaled, rows, value=-1)


def _step_unfactored(param: Tensor, grad: Tensor, variance: Tensor, alpha: Tensor,
                     weight: float, decay: float, eps1: float, d: float) -> None:
    """V̂ ← lerp(V̂, G², weight);  θ ← θ · decay − α · U / max(1, RMS(U)/d), U = G / max(√V̂, ε₁)."""
    variance.lerp_(grad * grad, weight)
    _step_along(param, variance.clone().clamp_(min=eps1 * eps1).rsqrt_().mul_(grad), alpha, d,
                decay)


def _clip(norms: Tensor, count: int, d: float) -> Tensor:
    """max(1, RMS(U)/d) of each tensor of the stack, given ‖U‖ of each and its element count."""
    return _at_least(1.0, norms.div_(count**0.5 * d))


def _step_along(param: Tensor, u: Tensor, alpha: Tensor, d: float, decay: float) -> None:
    """θ ← θ · decay − α · U / max(1, RMS(U)/d), per tensor of the stack."""
    norms, _ = _norms(u)
    scale = (alpha / _clip(norms, u[0].numel(), d)).to(u.dtype)
    _descend(param, u, _per_tensor(scale, u), decay)
