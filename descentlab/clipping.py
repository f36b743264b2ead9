"""Gradient clipping: by global norm, by value, and adaptive (unit-wise) clipping.

Global-norm and value clipping call torch's ``torch.nn.utils`` functions and
add one thing: a choice of what to do when the norm is not finite.
Adaptive gradient clipping (AGC) is not in torch and is written here.

Call these between ``loss.backward()`` and ``optimizer.step()``. With a
``torch.amp.GradScaler``, call ``scaler.unscale_(optimizer)`` first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch

from descentlab.optim.validation import check_positive

__all__ = ["clip_grad_norm_", "clip_grad_value_", "adaptive_clip_grad_", "unitwise_norm"]

ParamsT = torch.Tensor | Iterable[torch.Tensor]
_NONFINITE = ("propagate", "error", "skip")


def _grads(parameters: ParamsT) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    with_grad = [p for p in params if p.grad is not None]
    return with_grad, [p.grad for p in with_grad]


def _total_norm(grads: list[torch.Tensor], norm_type: float, foreach: bool | None) -> torch.Tensor:
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return torch.nn.utils.get_total_norm(grads, norm_type, False, foreach)
    norms = [torch.linalg.vector_norm(g, norm_type) for g in grads]  # pragma: no cover
    return torch.linalg.vector_norm(torch.stack(norms), norm_type)  # pragma: no cover


def clip_grad_norm_(
    parameters: ParamsT,
    max_norm: float,
    norm_type: float = 2.0,
    nonfinite: Literal["propagate", "error", "skip"] = "propagate",
    foreach: bool | None = None,
) -> torch.Tensor:
    r"""Scale all gradients together so their global norm is at most ``max_norm``; return the norm.

    With :math:`n = \|(g_1, \dots, g_k)\|_p` over every gradient,
    :math:`g_i \leftarrow g_i \cdot \min(1, \text{max\_norm} / (n + 10^{-6}))`
    (Pascanu et al., "On the difficulty of training recurrent neural
    networks", ICML 2013). Computed by ``torch.nn.utils.clip_grad_norm_``
    (or its two halves, ``get_total_norm`` and ``clip_grads_with_norm_``).

    ``nonfinite`` says what happens when ``n`` is ``inf`` or ``nan``:

    * ``"propagate"`` (torch's default): the gradients are multiplied by a
      ``nan``/``0`` coefficient, so they all become ``nan`` or zero;
    * ``"error"``: raise ``RuntimeError`` (torch's ``error_if_nonfinite=True``);
    * ``"skip"``: leave the gradients untouched and return the non-finite
      norm, so the caller can skip the step
      (``if not torch.isfinite(norm): ...``) or let
      :class:`~descentlab.guard.NonFiniteGuard` skip it.

    Returns the total norm before clipping, as a tensor (no host sync
    unless ``nonfinite="skip"``, which must look at it).
    """
    max_norm = check_positive("max_norm", max_norm)
    if nonfinite not in _NONFINITE:
        raise ValueError(f"nonfinite must be one of {_NONFINITE}, got {nonfinite!r}")
    norm_type = float(norm_type)
    params, grads = _grads(parameters)
    if nonfinite != "skip":
        return torch.nn.utils.clip_grad_norm_(
            params, max_norm, norm_type, error_if_nonfinite=nonfinite == "error", foreach=foreach
        )
    if not grads:
        return torch.tensor(0.0)
    total = _total_norm(grads, norm_type, foreach)
    if not bool(torch.isfinite(total)):
        return total
    if hasattr(torch.nn.utils, "clip_grads_with_norm_"):
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach)
    else:  # pragma: no cover - torch < 2.6
        torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type, foreach=foreach)
    return total


def clip_grad_value_(parameters: ParamsT, clip_value: float, foreach: bool | None = None) -> None:
    """Clamp each gradient element to ``[-clip_value, clip_value]`` (torch's ``clip_grad_value_``).

    Unlike norm clipping this changes the gradient's direction. ``nan``
    elements stay ``nan``.
    """
    clip_value = check_positive("clip_value", clip_value)
    torch.nn.utils.clip_grad_value_(parameters, clip_value, foreach=foreach)


def unitwise_norm(x: torch.Tensor, norm_type: float = 2.0) -> torch.Tensor:
    """Norm of each output unit: over all dims but the first for matrices and conv kernels.

    Scalars and vectors (biases, gains) count as a single unit. PyTorch
    stores ``Linear`` weights as ``(out, in)`` and conv weights as
    ``(out, in, *kernel)``, so the first dimension indexes output units.
    The result broadcasts against ``x``.
    """
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x, norm_type)
    return torch.linalg.vector_norm(x, norm_type, dim=tuple(range(1, x.ndim)), keepdim=True)


def adaptive_clip_grad_(
    parameters: ParamsT,
    clipping: float = 0.01,
    eps: float = 1e-3,
    norm_type: float = 2.0,
) -> torch.Tensor:
    r"""Adaptive gradient clipping (AGC), unit-wise, in place; return the fraction of units clipped.

    For each output unit :math:`i` of each parameter :math:`W` with gradient
    :math:`G` (Brock, De, Smith & Simonyan, "High-Performance Large-Scale
    Image Recognition Without Normalization", ICML 2021, Sec. 4.1):

    .. math:: G_i \leftarrow \lambda \frac{\|W_i\|^\star}{\|G_i\|} G_i
              \quad\text{if}\quad \frac{\|G_i\|}{\|W_i\|^\star} > \lambda,
              \qquad \|W_i\|^\star = \max(\|W_i\|, \epsilon),

    with :math:`\lambda` = ``clipping`` (default 0.01, the paper's choice
    for large batches; it recommends larger values for small batches) and
    :math:`\epsilon` = ``eps`` = 1e-3, which keeps zero-initialised
    parameters from having their gradients clipped to zero. The paper does
    not clip the final classifier layer: leave its parameters out of
    ``parameters``. Unit-wise norms as :func:`unitwise_norm`.
    """
    clipping = check_positive("clipping", clipping)
    eps = check_positive("eps", eps)
    params, _ = _grads(parameters)
    counts: list[torch.Tensor] = []
    units = 0
    for p in params:
        g = p.grad
        if g.is_sparse:
            raise ValueError("adaptive_clip_grad_ does not support sparse gradients")
        with torch.no_grad():
            max_norm = unitwise_norm(p.detach(), norm_type).clamp_min_(eps).mul_(clipping)
            g_norm = unitwise_norm(g, norm_type)
            # max_norm >= clipping * eps > 0, so a zero g_norm gives inf -> 1, never nan
            scale = (max_norm / g_norm).clamp_max_(1.0)
            g.mul_(scale.to(g.dtype))
            counts.append((scale < 1.0).sum())
            units += scale.numel()
    if not counts:
        return torch.tensor(0.0)
    device = counts[0].device
    return sum(c.to(device) for c in counts) / units
