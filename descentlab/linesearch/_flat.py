"""Flat-vector plumbing shared by the line searches and the second-order optimizers.

Line searches and quasi-Newton methods work on one vector ``x`` of all
parameters, while PyTorch keeps parameters as a list of tensors (possibly of
several shapes and on several devices). These helpers convert between the two
views, evaluate closures and compute Hessian-vector products, so that no
method re-implements them.

The flat vector lives on the device and dtype of the first parameter; slices
are moved back to each parameter's own device when written, so parameters
spread over devices still work (at the cost of copies). A complex parameter
takes part as its real view (``torch.view_as_real``: real and imaginary parts
are two real coordinates), as in ``torch.optim.LBFGS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "real_view",
    "flatten",
    "flat_grad",
    "add_to_params",
    "set_params",
    "loss_value",
    "evaluate_closure",
    "hessian_vector_product",
    "finite_difference_hvp",
    "ClosureEvaluation",
]


def real_view(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself, or its real view ``(..., 2)`` if it is complex."""
    return torch.view_as_real(t) if t.is_complex() else t


def flatten(tensors: Sequence[torch.Tensor], like: torch.Tensor | None = None) -> torch.Tensor:
    """Concatenate ``tensors`` into one real 1-D tensor on the device/dtype of ``like`` (or first).
    """
    ref = real_view(like if like is not None else tensors[0])
    return torch.cat(
        [real_view(t.detach()).reshape(-1).to(device=ref.device, dtype=ref.dtype)
         for t in tensors]
    )


def flat_grad(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The gradients ``p.grad`` of ``params`` as one flat vector (zeros where ``p.grad`` is None).
    """
    ref = real_view(params[0])
    parts = []
    for p in params:
        g = p.grad
        if g is None:
            parts.append(torch.zeros(real_view(p).numel(), device=ref.device, dtype=ref.dtype))
        else:
            if g.is_sparse:
                g = g.to_dense()
            parts.append(real_view(g.detach()).reshape(-1).to(device=ref.device, dtype=ref.dtype))
    return torch.cat(parts)


def _split(vec: torch.Tensor, params: Sequence[torch.Tensor]
           ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs ``(real view of p, its slice of vec shaped like it)``."""
    out, offset = [], 0
    for p in params:
        r = real_view(p)
        n = r.numel()
        out.append((r, vec[offset : offset + n].view_as(r).to(device=r.device, dtype=r.dtype)))
        offset += n
    return out


@torch.no_grad()
def add_to_params(
    params: Sequence[torch.Tensor], vec: torch.Tensor, alpha: Any = 1.0
) -> None:
    """In place: ``p += alpha * vec[slice of p]`` for every parameter."""
    for r, v in _split(vec, params):
        r.add_(v, alpha=alpha)


@torch.no_grad()
def set_params(params: Sequence[torch.Tensor], vec: torch.Tensor) -> None:
    """In place: copy the flat vector ``vec`` into the parameters."""
    for r, v in _split(vec, params):
        r.copy_(v)


class ClosureEvaluation:
    """One evaluation of a closure.

    Attributes:
        loss: what the closure returned (a tensor or a number), unchanged.
        f: the loss as a float.
        g: the flat gradient.
        graph_grads: if requested and available, the per-parameter gradients
            still attached to their autograd graph, so that Hessian-vector
            products can be taken at this point by double backward.
    """

    __slots__ = ("loss", "f", "g", "graph_grads")

    def __init__(self, loss: Any, f: float, g: torch.Tensor,
                 graph_grads: list[torch.Tensor] | None):
        self.loss = loss
        self.f = f
        self.g = g
        self.graph_grads = graph_grads


def loss_value(loss: Any) -> float:
    """The closure's loss as a float: a one-element tensor or a real number."""
    if loss is None:
        raise TypeError("closure returned None: it must return the loss (a scalar tensor "
                        "or a number)")
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(f"closure must return a scalar loss, got shape {tuple(loss.shape)}")
        return float(loss.detach())
    try:
        return float(loss)
    except (TypeError, ValueError):
        raise TypeError(
            f"closure must return the loss as a scalar tensor or a number, got "
            f"{type(loss).__name__}"
        ) from None


def _grad_handles(params: Sequence[torch.Tensor]) -> list[tuple[Any, int]]:
    return [(p.grad, -1 if p.grad is None else p.grad._version) for p in params]


def evaluate_closure(
    closure: Callable[[], Any],
    params: Sequence[torch.Tensor],
    *,
    create_graph: bool = False,
) -> ClosureEvaluation:
    """Call ``closure`` once and read the loss and the gradient it produced.

    Two closure styles are accepted, and told apart by whether the closure
    wrote any ``p.grad`` (a new tensor, or an in-place change):

    * the ``torch.optim.LBFGS`` style: the closure zeroes the gradients, computes
      the loss, calls ``loss.backward()`` and returns the loss. The gradient is
      whatever is in ``p.grad`` afterwards (accumulated if the closure did not
      zero it, as in torch);
    * the loss-only style: the closure returns the loss **without** calling
      ``backward``; the gradient is then taken here with ``torch.autograd.grad``
      with respect to the parameters that require a gradient, and written to
      ``p.grad``.

    A closure that writes no gradient and returns a loss without a graph (a
    Python float, a detached tensor, parameters that need no gradient) leaves
    the gradients as they are — set outside the closure, or none (zeros), as
    ``torch.optim.LBFGS`` reads them.

    With ``create_graph=True`` the gradients keep their graph where the closure
    allows it (loss-only style, or ``loss.backward(create_graph=True)``);
    ``graph_grads`` is ``None`` when it does not (plain ``backward()``), and the
    caller chooses another way to Hessian-vector products. ``p.grad`` is left
    holding the detached gradient (no parameter/gradient reference cycle).
    """
    before = _grad_handles(params)  # holding the old tensors keeps their ids unique
    with torch.enable_grad():
        loss = closure()
    f = loss_value(loss)
    wrote = any(p.grad is not g or (g is not None and g._version != v)
                for p, (g, v) in zip(params, before, strict=True))
    graph_grads: list[torch.Tensor] | None = None
    if not wrote and isinstance(loss, torch.Tensor) and loss.requires_grad:
        wrt = [p for p in params if p.requires_grad]
        with torch.enable_grad():
            grads = torch.autograd.grad(loss, wrt, create_graph=create_graph,
                                        allow_unused=True)
        by_param = {id(p): g for p, g in zip(wrt, grads, strict=True)}
        full = []
        for p in params:
            g = by_param.get(id(p))
            g = torch.zeros_like(p) if g is None else g
            if p.requires_grad:
                p.grad = g.detach()
            full.append(g)
        if create_graph:
            graph_grads = full
    elif wrote and create_graph:
        gg = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        if any(g.requires_grad for g in gg):
            graph_grads = gg
            for p in params:
                if p.grad is not None:
                    p.grad = p.grad.detach()  # break the parameter/gradient reference cycle
    return ClosureEvaluation(loss, f, flat_grad(params), graph_grads)


def hessian_vector_product(
    graph_grads: Sequence[torch.Tensor], params: Sequence[torch.Tensor], vec: torch.Tensor
) -> torch.Tensor:
    """Flat ``H v`` by double backward: ``d/dx (g(x) . v)`` with ``g`` still on its graph.

    ``graph_grads`` are the per-parameter gradients created with
    ``create_graph=True`` (see :func:`evaluate_closure`); the graph is retained so
    that several products can be taken at the same point. Parameters whose
    gradient does not depend on them contribute zero rows.
    """
    vs = [v for _, v in _split(vec, params)]
    with torch.enable_grad():
        pairs = [(g, v) for g, p, v in zip(graph_grads, params, vs, strict=True)
                 if g.requires_grad]
        if not pairs:
            return torch.zeros_like(vec)
        wrt = [p for p in params if p.requires_grad]
        hv = torch.autograd.grad(
            [g for g, _ in pairs],
            wrt,
            grad_outputs=[torch.view_as_complex(v) if g.is_complex() else v for g, v in pairs],
            retain_graph=True,
            allow_unused=True,
        )
    by_param = {id(p): h for p, h in zip(wrt, hv, strict=True)}
    full = [by_param.get(id(p)) for p in params]
    return flatten([torch.zeros_like(p) if h is None else h
                    for p, h in zip(params, full, strict=True)], like=vec)


def finite_difference_hvp(
    grad_at: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    g: torch.Tensor,
    vec: torch.Tensor,
) -> torch.Tensor:
    r"""``H v`` by a forward difference of gradients: ``(grad f(x + h v) - grad f(x)) / h``.

    ``grad_at(y)`` returns the flat gradient at ``y`` (one closure call); ``g``
    is the gradient at ``x``, already known. The step is
    ``h = sqrt(eps) (1 + ||x||) / ||v||`` (Nocedal & Wright, sec. 8.1), so the
    point moves by about ``sqrt(eps)`` relative to ``x`` whatever the length
    of ``v``; scipy's Newton-CG without ``hessp`` takes the absolute step
    ``sqrt(eps)`` instead. The error is ``O(h)`` truncation plus
    ``O(eps ||g|| / h)`` rounding: about ``1e-8`` relative in float64 and
    ``3e-4`` in float32. Costs one gradient evaluation per product.
    """
    vnorm = float(vec.norm())
    if vnorm == 0.0 or not math.isfinite(vnorm):
        return torch.zeros_like(vec)
    eps = torch.finfo(x.dtype).eps
    h = math.sqrt(eps) * (1.0 + float(x.norm())) / vnorm
    return (grad_at(x + h * vec) - g) / h
