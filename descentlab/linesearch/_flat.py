"""Flat-vector plumbing shared by the line searches and the second-order optimizers.

Line searches and quasi-Newton methods work on one vector ``x`` of all
parameters, while PyTorch keeps parameters as a list of tensors (possibly of
several shapes and on several devices). These helpers convert between the two
views and compute Hessian-vector products, so that no method re-implements
them.

The flat vector lives on the device and dtype of the first parameter; slices
are moved back to each parameter's own device when written, so parameters
spread over devices still work (at the cost of copies).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = [
    "flatten",
    "flat_grad",
    "add_to_params",
    "set_params",
    "evaluate_closure",
    "hessian_vector_product",
    "ClosureEvaluation",
]


def flatten(tensors: Sequence[torch.Tensor], like: torch.Tensor | None = None) -> torch.Tensor:
    """Concatenate ``tensors`` into one 1-D tensor on the device/dtype of ``like`` (or first)."""
    ref = like if like is not None else tensors[0]
    return torch.cat(
        [t.detach().reshape(-1).to(device=ref.device, dtype=ref.dtype) for t in tensors]
    )


def flat_grad(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The gradients ``p.grad`` of ``params`` as one flat vector (zeros where ``p.grad`` is None).
    """
    ref = params[0]
    parts = []
    for p in params:
        g = p.grad
        if g is None:
            parts.append(torch.zeros(p.numel(), device=ref.device, dtype=ref.dtype))
        else:
            if g.is_sparse:
                g = g.to_dense()
            parts.append(g.detach().reshape(-1).to(device=ref.device, dtype=ref.dtype))
    return torch.cat(parts)


def _split(vec: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out, offset = [], 0
    for p in params:
        n = p.numel()
        out.append(vec[offset : offset + n].view_as(p).to(device=p.device, dtype=p.dtype))
        offset += n
    return out


@torch.no_grad()
def add_to_params(
    params: Sequence[torch.Tensor], vec: torch.Tensor, alpha: float = 1.0
) -> None:
    """In place: ``p += alpha * vec[slice of p]`` for every parameter."""
    for p, v in zip(params, _split(vec, params), strict=True):
        p.add_(v, alpha=alpha)


@torch.no_grad()
def set_params(params: Sequence[torch.Tensor], vec: torch.Tensor) -> None:
    """In place: copy the flat vector ``vec`` into the parameters."""
    for p, v in zip(params, _split(vec, params), strict=True):
        p.copy_(v)


class ClosureEvaluation:
    """One evaluation of a closure: loss ``f`` (float), flat gradient ``g``, and, if
    requested, the per-parameter gradients still attached to their autograd graph
    (``graph_grads``) so that Hessian-vector products can be taken at this point."""

    __slots__ = ("f", "g", "graph_grads")

    def __init__(self, f: float, g: torch.Tensor, graph_grads: list[torch.Tensor] | None):
        self.f = f
        self.g = g
        self.graph_grads = graph_grads


def evaluate_closure(
    closure: Callable[[], torch.Tensor | float],
    params: Sequence[torch.Tensor],
    *,
    create_graph: bool = False,
) -> ClosureEvaluation:
    """Call ``closure`` once and read the loss and gradient it produced.

    Two closure styles are accepted:

    * the ``torch.optim.LBFGS`` style: the closure zeroes the gradients, computes
      the loss, calls ``loss.backward()`` and returns the loss;
    * the loss-only style: the closure returns the loss **without** calling
      ``backward``; the gradient is then taken here with ``torch.autograd.grad``
      (the recommended style when second derivatives are needed, because it
      avoids the parameter/gradient reference cycle of
      ``backward(create_graph=True)``).

    With ``create_graph=True`` (Hessian-vector products wanted) a closure of the
    first style must call ``loss.backward(create_graph=True)``; otherwise a
    ``RuntimeError`` says so. ``p.grad`` is left holding the detached gradient.
    """
    for p in params:
        p.grad = None
    with torch.enable_grad():
        loss = closure()
    if loss is None:
        raise TypeError("closure returned None: it must return the loss (a scalar tensor)")
    if not isinstance(loss, torch.Tensor):
        raise TypeError(
            f"closure must return the loss as a scalar tensor, got {type(loss).__name__}"
        )
    if loss.numel() != 1:
        raise ValueError(f"closure must return a scalar loss, got shape {tuple(loss.shape)}")
    f = float(loss.detach())
    graph_grads: list[torch.Tensor] | None = None
    if all(p.grad is None for p in params):
        if not loss.requires_grad:
            raise RuntimeError(
                "closure produced no gradients: it must either call loss.backward() or return "
                "a loss that depends on the parameters"
            )
        with torch.enable_grad():
            grads = torch.autograd.grad(
                loss, list(params), create_graph=create_graph, allow_unused=True
            )
        grads = [
            torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
        ]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.detach()
        if create_graph:
            graph_grads = list(grads)
    elif create_graph:
        graph_grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        if not any(g.requires_grad for g in graph_grads):
            raise RuntimeError(
                "this method needs Hessian-vector products, but the gradients carry no graph: "
                "in the closure call loss.backward(create_graph=True), or return the loss "
                "without calling backward and the optimizer will differentiate it"
            )
        for p in params:
            if p.grad is not None:
                p.grad = p.grad.detach()  # break the parameter/gradient reference cycle
    g = flat_grad(params)
    return ClosureEvaluation(f, g, graph_grads)


def hessian_vector_product(
    graph_grads: Sequence[torch.Tensor], params: Sequence[torch.Tensor], vec: torch.Tensor
) -> torch.Tensor:
    """Flat ``H v`` by double backward: ``d/dx (g(x) . v)`` with ``g`` still on its graph.

    ``graph_grads`` are the per-parameter gradients created with
    ``create_graph=True`` (see :func:`evaluate_closure`); the graph is retained so
    that several products can be taken at the same point. Parameters whose
    gradient does not depend on them contribute zero rows.
    """
    vs = _split(vec, params)
    with torch.enable_grad():
        pairs = [(g, p, v) for g, p, v in zip(graph_grads, params, vs, strict=True)
                 if g.requires_grad]
        if not pairs:
            return torch.zeros_like(vec)
        hv = torch.autograd.grad(
            [g for g, _, _ in pairs],
            list(params),
            grad_outputs=[v for _, _, v in pairs],
            retain_graph=True,
            allow_unused=True,
        )
    hv = [torch.zeros_like(p) if h is None else h for p, h in zip(params, hv, strict=True)]
    return flatten(hv, like=vec)
