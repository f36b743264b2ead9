r"""Hutchinson estimates of the Hessian diagonal, and the optimizer shell that uses them.

Hutchinson's estimator (Bekas, Kokiopoulou & Saad 2007): for a random probe
:math:`u` with :math:`E[u u^T] = I` (Gaussian or Rademacher entries),

.. math::

    \operatorname{diag}(H) = E[u \odot (H u)],\qquad
    \hat h = \frac{1}{S}\sum_{s=1}^{S} u_s \odot (H u_s),

one Hessian-vector product per probe. The products are descentlab's own
(:mod:`descentlab.linesearch._flat`), chosen by ``hvp=`` as in
:class:`~descentlab.second_order.NewtonCG`:

* ``"autograd"`` — double backward through the gradient's graph: call
  ``loss.backward(create_graph=True)`` before ``step()``, or pass a closure
  that does, or one that returns the loss without calling ``backward``;
* ``"finite_difference"`` — ``(∇f(θ + h u) − ∇f(θ)) / h`` with the step of
  :func:`~descentlab.linesearch._flat.finite_difference_hvp`: needs a
  closure (one extra closure call per probe; the parameters and gradients are
  put back afterwards); no graph is built;
* ``"auto"`` (default) — double backward when the gradients carry a graph,
  finite differences through the closure otherwise.

Probes are drawn from torch's global generator in ``pytorch_optimizer``'s
order (every sample, then every parameter with a gradient in group order:
``torch.randn_like(p)``, or ``torch.randint_like(p, 0, 2) * 2 - 1``), so with
the same seed both libraries use the same probes. Override
:meth:`HutchinsonOptimizer.sample_probes` to supply others. ``step(hessian=...)``
takes an estimate computed elsewhere (one tensor per parameter, in group
order), as ``pytorch_optimizer``'s ``step(hessian=...)`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from descentlab._foreach import by_device_and_dtype
from descentlab.linesearch._closure import check_hvp_mode
from descentlab.linesearch._flat import (
    evaluate_closure,
    finite_difference_hvp,
    flat_grad,
    flatten,
    hessian_vector_product,
    set_params,
)
from descentlab.optim.validation import check_int, check_learning_rate, check_params

__all__ = ["HutchinsonOptimizer", "DISTRIBUTIONS", "unflatten"]

#: probe distributions of the estimator
DISTRIBUTIONS = ("gaussian", "rademacher")

_NO_HVP = (
    "{name} needs Hessian-vector products at this step (every update_period steps) but has "
    "no way to take them: call loss.backward(create_graph=True) before step(), pass a closure "
    "(hvp='auto' or 'finite_difference'), or give step(hessian=[...])"
)


def unflatten(vec: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    """Split the flat vector ``vec`` into real tensors shaped (and typed) like ``like``."""
    out, offset = [], 0
    for t in like:
        out.append(vec[offset : offset + t.numel()].view_as(t).to(device=t.device, dtype=t.dtype))
        offset += t.numel()
    return out


class HutchinsonOptimizer(torch.optim.Optimizer):
    """Shell of the optimizers preconditioned by a Hutchinson Hessian diagonal.

    It owns the closure, the Hessian-vector products (``hvp``), the probes,
    ``maximize``, weight decay (decoupled — ``p ← p (1 − lr λ)``, or
    ``p ← p (1 − λ)`` with ``fixed_decay`` — or added to the gradient), and the
    step counter ``group["step"]``; a subclass sets :attr:`state_keys`,
    checks its hyperparameters in :meth:`check_group` and writes the update in
    :meth:`update`. The fresh estimate is in ``state["hessian"]`` on the
    steps that compute one.
    """

    #: per-parameter state created as zeros at a parameter's first step
    state_keys: tuple[str, ...] = ()

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        *,
        update_period: int,
        num_samples: int,
        hessian_distribution: str,
        maximize: bool,
        hvp: str,
    ) -> None:
        self.check_group(defaults)
        self.update_period = check_int("update_period", update_period, minimum=1)
        self.num_samples = check_int("num_samples", num_samples, minimum=1)
        if hessian_distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"hessian_distribution must be one of {DISTRIBUTIONS}, "
                f"got {hessian_distribution!r}"
            )
        self.distribution = hessian_distribution
        self.maximize = bool(maximize)
        self.hvp = check_hvp_mode(hvp)
        super().__init__(check_params(params), defaults)

    #: constructor settings kept as attributes (as pytorch_optimizer keeps them), copied and pickled
    _settings = ("update_period", "num_samples", "distribution", "maximize", "hvp")

    def __getstate__(self) -> dict[str, Any]:
        """torch.optim's picklable state plus the estimator's settings."""
        return {**super().__getstate__(), **{k: getattr(self, k) for k in self._settings}}

    def check_group(self, group: dict[str, Any]) -> None:
        """Validate one group's hyperparameters (subclasses extend this)."""
        check_learning_rate(group["lr"])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (as torch.optim does) after checking its hyperparameters."""
        if getattr(self, "param_groups", None):
            self.check_group({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def update(
        self,
        group: dict[str, Any],
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        states: list[dict[str, torch.Tensor]],
        hessian: list[torch.Tensor] | None,
    ) -> None:
        """Update ``params`` in place (one device and dtype); ``hessian`` on estimate steps."""
        raise NotImplementedError

    # -- the estimate ----------------------------------------------------------------------
    def sample_probes(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """One probe per parameter (``pytorch_optimizer``'s draws; override to supply others)."""
        if self.distribution == "rademacher":
            return [torch.randint_like(p, 0, 2) * 2.0 - 1.0 for p in params]
        return [torch.randn_like(p) for p in params]

    def _estimate(
        self, params: list[torch.Tensor], closure: Callable[[], Any] | None,
        graph_grads: list[torch.Tensor] | None,
    ) -> list[torch.Tensor]:
        """``mean_s u_s ⊙ (H u_s)`` for ``params`` (those with gradients)."""
        if graph_grads is None and self.hvp != "finite_difference":
            grads = [p.grad for p in params]
            if all(g.requires_grad for g in grads):
                graph_grads = grads
        if graph_grads is None and (closure is None or self.hvp == "autograd"):
            raise RuntimeError(_NO_HVP.format(name=type(self).__name__))
        x = flatten(params)
        g = flat_grad(params)
        saved_grads = [p.grad.detach().clone() for p in params] if graph_grads is None else None

        def grad_at(point: torch.Tensor) -> torch.Tensor:
            set_params(params, point)
            return evaluate_closure(closure, params).g

        total = [torch.zeros_like(p) for p in params]
        for _ in range(self.num_samples):
            probes = self.sample_probes(params)
            u = flatten(probes, like=x)
            if graph_grads is not None:
                hu = hessian_vector_product(graph_grads, params, u)
            else:
                hu = finite_difference_hvp(grad_at, x, g, u)
            for t, z, h in zip(total, probes, unflatten(hu, params), strict=True):
                t.addcmul_(h, z, value=1.0 / self.num_samples)
        if saved_grads is not None:  # finite differences moved the point and the gradients
            set_params(params, x)
            for p, s in zip(params, saved_grads, strict=True):
                p.grad = s
        return total

    # -- the step --------------------------------------------------------------------------
    @torch.no_grad()
    def step(
        self,
        closure: Callable[[], Any] | None = None,
        hessian: list[torch.Tensor] | None = None,
    ) -> Any:
        """Perform one optimisation step.

        Args:
            closure: optional; re-evaluates the model and returns the loss
                (plain ``backward()``, ``backward(create_graph=True)`` or no
                ``backward`` at all; see the module docstring).
            hessian: optional Hessian-diagonal estimates, one tensor per
                parameter in group order; used instead of computing one.

        Returns:
            The closure's loss, or ``None`` without a closure.
        """
        loss = None
        graph_grads = None
        params = [p for g in self.param_groups for p in g["params"]]
        step = self.param_groups[0].get("step", 0) + 1
        estimate_now = hessian is not None or (step - 1) % self.update_period == 0
        if closure is not None:
            want_graph = estimate_now and hessian is None and self.hvp != "finite_difference"
            with torch.enable_grad():
                ev = evaluate_closure(closure, params, create_graph=want_graph)
            loss, graph_grads = ev.loss, ev.graph_grads
        active = [p for p in params if p.grad is not None]
        for p in active:
            if p.grad.is_sparse or p.is_complex():
                kind = "sparse gradients" if p.grad.is_sparse else "complex parameters"
                raise RuntimeError(f"{type(self).__name__} does not support {kind}")
        estimates: dict[int, torch.Tensor] = {}
        if hessian is not None:
            if len(hessian) != len(params):
                raise ValueError(
                    f"hessian must hold one tensor per parameter ({len(params)}), "
                    f"got {len(hessian)}"
                )
            for p, h in zip(params, hessian, strict=True):
                if h.shape != p.shape:
                    raise ValueError(
                        f"hessian entry of shape {tuple(h.shape)} does not match its parameter's "
                        f"shape {tuple(p.shape)}"
                    )
                estimates[id(p)] = h
        elif estimate_now and active:
            if graph_grads is not None:
                by_id = {id(p): gg for p, gg in zip(params, graph_grads, strict=True)}
                graph_grads = [by_id[id(p)] for p in active]
            with torch.enable_grad():
                for p, h in zip(active, self._estimate(active, closure, graph_grads),
                                strict=True):
                    estimates[id(p)] = h
            for p in active:  # the graph is spent: free it (and the parameter/gradient cycle)
                p.grad = p.grad.detach()
        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1
            mine = [p for p in group["params"] if p.grad is not None]
            for p in mine:
                state = self.state[p]
                for key in self.state_keys:
                    if key not in state:
                        state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if id(p) in estimates:
                    state["hessian"] = estimates[id(p)].detach()
            for batch in by_device_and_dtype(mine):
                grads = [p.grad.detach() for p in batch]
                if self.maximize:
                    grads = list(torch._foreach_neg(grads))
                grads = self._weight_decay(group, batch, grads)
                states = [self.state[p] for p in batch]
                fresh = [s["hessian"] for s in states] if estimates else None
                self.update(group, batch, grads, states, fresh)
        return loss

    @staticmethod
    def _weight_decay(
        group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Decoupled decay applied to ``params``, or coupled: returns ``grads + λ params``."""
        decay = group["weight_decay"]
        if decay == 0:
            return grads
        if group["weight_decouple"]:
            scale = 1.0 if group["fixed_decay"] else group["lr"]
            torch._foreach_mul_(params, 1.0 - decay * scale)
            return grads
        return list(torch._foreach_add(grads, params, alpha=decay))
