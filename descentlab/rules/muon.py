"""Muon: momentum orthogonalised by a Newton–Schulz iteration, per weight matrix.

The specification of :class:`descentlab.Muon`, a tensor rule: it needs each
matrix whole (a matrix product, a Frobenius norm) and is written for a stack
``[B, m, n]`` of same-shape matrices, so that B matrices cost one batched
product (``torch.bmm``/``torch.baddbmm``) instead of B small ones. Each matrix
of the stack is computed exactly as alone: the batched products give the
same bits as ``mm``/``addmm`` on each matrix, and the norm is taken per
matrix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from descentlab.rules.base import STRUCTURAL, HParam, TensorRule
from descentlab.validation import check_int, check_nonnegative, one_of

__all__ = ["MuonRule", "newton_schulz", "adjusted_lr", "NS_COEFFICIENTS", "NS_DTYPES"]

#: Keller Jordan's quintic coefficients (a, b, c), chosen to maximise the slope at zero.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
#: Precisions the Newton–Schulz iteration may run in (torch.optim.Muon: bfloat16).
NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")
#: Smallest side of the matrices iterated as one batch (``torch.bmm``). On smaller ones the
#: batched kernels take another code path that can round a bfloat16 result differently from
#: the per-matrix ``addmm`` (seen at 16 × 16, never at ≥ 20), and batching saves little there.
BATCH_MIN = 32


def newton_schulz(
    g: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
    dtype: torch.dtype = torch.bfloat16,
) -> Tensor:
    """Approximate orthogonalisation U Vᵀ of each matrix of ``g`` (``[B, m, n]``).

    With X₀ = G/‖G‖_F (in ``dtype``; transposed first when m > n so that
    XXᵀ is the smaller Gram matrix) and k = ``steps`` iterations of

        A = X Xᵀ,   B = bA + cA²,   X ← aX + BX,

    the singular values of X approach an interval around 1 (not exactly 1:
    the coefficients trade convergence for speed, see Jordan et al. 2024).
    A stack of B > 1 matrices of at least :data:`BATCH_MIN` a side is iterated
    with ``torch.bmm``/``torch.baddbmm`` into buffers allocated once per call
    (A, B and two for the iterates, used in turn), others one matrix at a time.
    ``g`` is never modified (it may be the caller's momentum).
    """
    a, b, c = coefficients
    x = g.to(dtype)
    tall = g.size(-2) > g.size(-1)
    if tall:
        x = x.mT
    if x.size(0) == 1 or min(x.shape[-2:]) < BATCH_MIN:
        x = torch.stack([_orthogonalise(m, coefficients, steps, eps) for m in x])
    else:
        norms = torch.stack([m.norm() for m in x]).clamp_(min=eps).view(-1, 1, 1)
        x = torch.div(x, norms)  # (for m > n, transposed in memory, as torch.optim's X₀)
        rows = x.size(-2)
        gram = x.new_empty(x.size(0), rows, rows)
        poly = torch.empty_like(gram)
        # two contiguous buffers for the iterates (addmm's results are contiguous: the layout
        # of X decides the bits of the next X Xᵀ), used in turn
        iterates = (x.new_empty(x.shape), x.new_empty(x.shape))
        for k in range(steps):
            torch.bmm(x, x.mT, out=gram)
            torch.baddbmm(gram, gram, gram, beta=b, alpha=c, out=poly)
            x = torch.baddbmm(x, poly, x, beta=a, out=iterates[k % 2])
    return x.mT if tall else x


def _orthogonalise(
    m: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float
) -> Tensor:
    """The iteration on one (wide) matrix with torch.optim.Muon's own products."""
    a, b, c = coefficients
    m = m / m.norm().clamp(min=eps)
    for _ in range(steps):
        gram = m @ m.T
        m = torch.addmm(m, torch.addmm(gram, gram, gram, beta=b, alpha=c), m, beta=a)
    return m


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """η scaled for an m × n matrix: √max(1, m/n) ("original", Jordan) or 0.2√max(m, n)
    ("match_rms_adamw", Liu et al. 2025: an update RMS like AdamW's)."""
    rows, cols = shape[-2], shape[-1]
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr * math.sqrt(max(1, rows / cols))


def _check_coefficients(name: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(f"{name} must be a tuple of 3 numbers (a, b, c), got {value!r}")
    return tuple(float(v) for v in value)


def _check_ns_steps(name: str, value: Any) -> int:
    check_int(name, value)
    if value >= 100:
        raise ValueError(f"{name} must be < 100 (each step is 3 matrix products), got {value!r}")
    return value


class MuonRule(TensorRule):
    """B ← μB + (1−μ)g;  U = NS(g + μ(B − g)) (Nesterov) or NS(B);  θ ← θ(1 − ηλ) − η' U.

    torch.optim.Muon's update (its ``lerp`` form of momentum, which differs
    from its docstring's B ← μB + g by the factor 1 − μ on the buffer), with
    η' = :func:`adjusted_lr`. Only 2-D parameters: others are refused at
    construction (put them in an AdamW group; :func:`descentlab.muon_param_groups`
    does so by structure).
    """

    name = "muon"
    batched = True
    same_bits_on_any_thread_count = True
    hparams = (
        HParam("lr", 1e-3, check=check_nonnegative, doc="learning rate η"),
        HParam("weight_decay", 0.1, check=check_nonnegative, doc="decoupled weight decay λ"),
        HParam("momentum", 0.95, check=check_nonnegative, doc="momentum μ"),
        HParam("nesterov", True, STRUCTURAL, doc="Nesterov momentum"),
        HParam("ns_coefficients", NS_COEFFICIENTS, STRUCTURAL, check=_check_coefficients,
               doc="Newton–Schulz (a, b, c)"),
        HParam("eps", 1e-7, check=check_nonnegative, doc="floor of the Frobenius norm"),
        HParam("ns_steps", 5, STRUCTURAL, check=_check_ns_steps, doc="Newton–Schulz iterations"),
        HParam("adjust_lr_fn", None, STRUCTURAL, check=one_of(ADJUST_LR_FNS),
               doc="None/'original' or 'match_rms_adamw'"),
        HParam("ns_dtype", "bfloat16", STRUCTURAL, check=one_of(NS_DTYPES),
               doc="precision of the Newton–Schulz iteration"),
    )

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        flags = super().flags(group)
        flags["ns_coefficients"] = tuple(float(v) for v in flags["ns_coefficients"])
        return flags

    def check_param(self, param: Tensor, group: Mapping[str, Any]) -> None:
        """Refuse complex and non-2-D parameters, naming the shape and what to do."""
        super().check_param(param, group)
        if param.dim() != 2:
            raise ValueError(
                f"Muon only supports 2-D parameters, got one of shape {tuple(param.shape)}: "
                "put it in an AdamW group ({'params': [...], 'rule': 'adamw'}; "
                "descentlab.muon_param_groups(model) builds these groups by structure), "
                "or for a convolution weight optimize a 2-D view of it"
            )

    def init_state(self, param: Tensor, flags: Any, h: Any) -> dict[str, Tensor]:
        return {"momentum_buffer": torch.zeros_like(param, memory_format=torch.preserve_format)}

    def update(self, param, grad, state, h, step, flags) -> None:
        momentum = h["momentum"]
        buf = state["momentum_buffer"]
        buf.lerp_(grad, 1 - momentum)
        dtype = NS_DTYPES[flags["ns_dtype"]]
        if flags["nesterov"]:  # g + μ(B − g), rounded once into the iteration's precision
            direction = torch.lerp(grad, buf, momentum, out=grad.new_empty(grad.shape, dtype=dtype))
        else:
            direction = buf
        ortho = newton_schulz(
            direction, flags["ns_coefficients"], flags["ns_steps"], h["eps"], dtype
        )
        lr = h["lr"]
        param.mul_(1 - lr * h["weight_decay"])
        param.add_(ortho, alpha=-adjusted_lr(lr, flags["adjust_lr_fn"], param.shape))
