r"""Sharpness-aware minimisation over any optimizer: :class:`SAM` (plain and adaptive).

SAM (Foret et al. 2021) minimises the loss in a neighbourhood of radius
:math:`\rho` around the weights, :math:`\min_w \max_{\|\epsilon\| \le \rho}
L(w + \epsilon)`. To first order the inner maximum is reached at

.. math:: \hat\epsilon(w) = \rho\, \frac{T_w^2\, g}{\|T_w\, g\|_2 + \varepsilon},
          \qquad g = \nabla L(w),

with :math:`T_w = I` for SAM and :math:`T_w = \mathrm{diag}(|w|)` for
adaptive SAM (ASAM, Kwon et al. 2021, ``adaptive=True``), which makes the
neighbourhood scale-invariant. One step is then

1. ``first_step``: :math:`w \leftarrow w + \hat\epsilon(w)` (the old
   weights kept), the norm taken once over *all* parameters of all groups;
2. the closure at the perturbed point: :math:`g_{SAM} = \nabla L(w + \hat\epsilon)`;
3. ``second_step``: the old weights restored and the base optimizer's
   step taken with :math:`g_{SAM}` in ``p.grad``.

So a step costs one extra forward-backward pass over the base optimizer's.

References: P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur, "Sharpness-Aware
Minimization for Efficiently Improving Generalization", ICLR 2021;
J. Kwon, J. Kim, H. Park, I. K. Choi, "ASAM: Adaptive Sharpness-Aware
Minimization for Scale-Invariant Learning of Deep Neural Networks", ICML 2021.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from descentlab.optim.validation import check_nonnegative
from descentlab.wrappers.base import OptimizerWrapper
from descentlab.wrappers.marks import GradientMarks

__all__ = ["SAM"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _centralize(grad: torch.Tensor) -> None:
    """Gradient centralisation (Yong et al. 2020): subtract the mean over all but the first dim."""
    if grad.dim() > 1:
        grad.sub_(grad.mean(dim=tuple(range(1, grad.dim())), keepdim=True))


class SAM(OptimizerWrapper):
    r"""SAM: sharpness-aware minimisation over any optimizer (Foret et al., 2021); ASAM if adaptive.

    The arguments are ``pytorch_optimizer.SAM``'s, so code written for it
    runs after changing the import::

        opt = descentlab.SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1,
                             momentum=0.9)

        def closure():                      # the closure protocol
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            return loss

        loss = opt.step(closure)            # two forward-backward passes

    **Closure protocol.** ``closure()`` zeroes the gradients, computes the
    loss, calls ``loss.backward()`` and returns the loss. ``step(closure)``
    calls it at the perturbed point :math:`w + \hat\epsilon` — and, first, at
    the current point unless the caller has already computed the gradients
    there:

    * descentlab's protocol (as for L-BFGS and every descentlab optimizer):
      ``opt.step(closure)`` alone. The gradients have not changed since the
      previous step (or there are none), so ``step`` calls the closure twice,
      at :math:`w` and at :math:`w + \hat\epsilon`, and returns the loss at
      :math:`w`.
    * ``pytorch_optimizer``'s protocol: ``closure(); opt.step(closure)``
      (or ``loss.backward(); opt.step(closure)``). The gradients changed
      since the previous step, so they are taken as :math:`\nabla L(w)` and
      ``step`` calls the closure once, at :math:`w + \hat\epsilon`, and
      returns ``None`` (as ``pytorch_optimizer`` does).

    "Changed" means that some ``p.grad`` is another tensor or was modified
    in place since the end of the previous step (:mod:`descentlab.wrappers.marks`);
    gradients that changed but are all zero (``zero_grad(set_to_none=False)``
    before ``step``) are not taken as the current point's. Either way each
    step evaluates the gradient once at :math:`w` and once at
    :math:`w + \hat\epsilon`. The two halves are also available by hand::

        loss_fn(model(x), y).backward()
        opt.first_step(zero_grad=True)
        loss_fn(model(x), y).backward()
        opt.second_step(zero_grad=True)

    Models with batch norm: the perturbed pass updates the running statistics
    a second time; freeze them for that pass if that matters.

    It is an :class:`~descentlab.wrappers.OptimizerWrapper`: ``param_groups``
    are the base optimizer's, each with its own ``rho`` and ``adaptive`` (so
    ``attach(opt, rho=schedule)`` schedules the radius), ``state_dict()`` is
    the base optimizer's plus SAM's entry, and it copies, pickles and nests.
    ``opt.base_optimizer`` (also ``opt.optimizer``) is the base optimizer.
    To skip steps whose perturbed gradient is not finite, guard the base:
    ``SAM(params, NonFiniteGuard(AdamW(params)))``; ``NonFiniteGuard(SAM(...))``
    checks the gradient at the current point.

    Args:
        params: the parameters or parameter groups (groups may set ``rho``
            and ``adaptive``).
        base_optimizer: a ``torch.optim.Optimizer`` class (or any callable
            ``f(param_groups, **kwargs)``), built over ``params`` with
            ``kwargs``; or an optimizer instance over the same parameters
            (then ``kwargs`` must be empty).
        rho: the neighbourhood radius :math:`\rho` (default 0.05; Foret et
            al. tune it in {0.01, ..., 0.5}; ASAM needs larger values, e.g. 0.5–2).
        adaptive: ASAM's scale-invariant neighbourhood (default False).
        use_gc: centralise the gradients (subtract each output unit's mean,
            for tensors of two or more dimensions) before perturbing, as
            ``pytorch_optimizer``; the norm is taken before centralising.
        perturb_eps: :math:`\varepsilon` added to the norm (default 1e-12).
        foreach: handed to the base optimizer when not ``None``.
        kwargs: the base optimizer's arguments (``lr=...``).

    Where implementations disagree:

    * ``pytorch_optimizer`` 4.1 rounds the per-tensor norms to float32
      before adding them, so in float64 its perturbation is float32-accurate
      (relative error ~1e-8); here the norm is accumulated in the gradients'
      dtype (float32 at least). In float32 the two agree bitwise.
    * Kwon et al.'s own ASAM code uses :math:`T_w = |w| + \eta`
      (:math:`\eta = 0.01`) for weight matrices and :math:`T_w = I` for
      biases; ``pytorch_optimizer`` and Foret et al.'s follow-up code (as
      here) use :math:`T_w = |w|` for every parameter of an adaptive group.
    * ``pytorch_optimizer``'s ``SAM.state`` *is* the base optimizer's state
      and its closure must be preceded by a backward pass; here ``state`` is
      SAM's own (the saved weights between the two halves) and ``step``
      evaluates the current point itself when needed (see above).
    * Weight decay is the base optimizer's, applied at :math:`w` with
      :math:`g_{SAM}`; the perturbation uses the loss gradient alone.
    """

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[Optimizer] | Callable[..., Optimizer] | Optimizer,
        rho: float = 0.05,
        adaptive: bool = False,
        use_gc: bool = False,
        perturb_eps: float = 1e-12,
        foreach: bool | None = None,
        **kwargs: Any,
    ) -> None:
        check_nonnegative("rho", rho)
        self.perturb_eps = check_nonnegative("perturb_eps", perturb_eps)
        _check_adaptive(adaptive)
        self.use_gc = bool(use_gc)
        if foreach is not None:
            kwargs["foreach"] = foreach
        super().__init__(_base_optimizer(params, base_optimizer, kwargs))
        clash = {"rho", "adaptive"} & set(self.defaults)
        if clash:
            raise ValueError(
                f"{type(self.unwrapped).__name__} has its own hyperparameter "
                f"{sorted(clash)[0]!r}, which SAM keeps in every parameter group: "
                "SAM cannot wrap it"
            )
        self.defaults.setdefault("rho", rho)
        self.defaults.setdefault("adaptive", adaptive)
        for group in self.param_groups:
            self._set_up_group(group)
        self._marks = GradientMarks(self._params())

    @property
    def base_optimizer(self) -> Optimizer:
        """The base optimizer (``pytorch_optimizer``'s name for ``optimizer``)."""
        return self.optimizer

    def _set_up_group(self, group: dict[str, Any]) -> None:
        group.setdefault("rho", self.defaults["rho"])
        group.setdefault("adaptive", self.defaults["adaptive"])
        check_nonnegative("rho", group["rho"])
        _check_adaptive(group["adaptive"])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the base optimizer (with SAM's ``rho`` and ``adaptive`` unless set)."""
        super().add_param_group(param_group)
        self._set_up_group(self.param_groups[-1])

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _grad_norm(self) -> torch.Tensor:
        r"""The global norm :math:`\|T_w g\|_2` over every parameter with a gradient."""
        weighted = []
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if g.is_sparse:
                    raise RuntimeError("SAM does not support sparse gradients")
                if g.dtype in _LOW_PRECISION:
                    g = g.float()
                weighted.append(g * p.abs() if group["adaptive"] else g)
        if not weighted:
            return torch.zeros((), dtype=torch.float32)
        device = weighted[0].device
        dtype = torch.float32
        for g in weighted:
            dtype = torch.promote_types(dtype, g.dtype)
        norms = torch._foreach_norm(weighted)
        return torch.stack([n.to(device=device, dtype=dtype) for n in norms]).square().sum().sqrt()

    def _perturb(self, norm: torch.Tensor, *, gradients_are_scratch: bool) -> None:
        r"""Save the weights and move them to :math:`w + \hat\epsilon` (foreach, per dtype).

        With ``gradients_are_scratch`` (they are cleared next) the
        perturbation is formed in the gradients' memory instead of a new
        tensor, with the same arithmetic: on CPU a temporary of the model's
        size costs more than all the perturbation's arithmetic.
        """
        norm = norm + self.perturb_eps
        for group in self.param_groups:
            scale = group["rho"] / norm
            for params in _by_device_and_dtype(p for p in group["params"] if p.grad is not None):
                grads = [p.grad for p in params]
                if self.use_gc:
                    for g in grads:
                        _centralize(g)
                for p in params:
                    self.state[p]["old_p"] = p.clone()
                if group["adaptive"]:  # (w * w * g) * scale
                    e_w = torch._foreach_mul(params, params)
                    torch._foreach_mul_(e_w, grads)
                    torch._foreach_mul_(e_w, scale.to(params[0]))
                elif gradients_are_scratch:
                    e_w = grads
                    torch._foreach_mul_(e_w, scale.to(params[0]))
                else:
                    e_w = torch._foreach_mul(grads, scale.to(params[0]))
                torch._foreach_add_(params, e_w)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        r"""Move to the perturbed point :math:`w + \hat\epsilon(w)` along the gradients ``.grad``.

        The current weights are kept in ``state[p]["old_p"]`` until
        :meth:`second_step`; ``zero_grad=True`` then clears the gradients.
        """
        self._perturb(self._grad_norm(), gradients_are_scratch=zero_grad)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore the weights saved by :meth:`first_step` and take the base optimizer's step.

        The base optimizer steps with the gradients now in ``p.grad`` (those
        at the perturbed point); ``zero_grad=True`` clears them afterwards.
        """
        perturbed = [p for p in self._params() if "old_p" in self.state.get(p, ())]
        if perturbed:
            torch._foreach_copy_(perturbed, [self.state[p].pop("old_p") for p in perturbed])
            for p in perturbed:
                if not self.state[p]:
                    del self.state[p]
        self.optimizer.step()
        if zero_grad:
            self.zero_grad()
        self._marks = GradientMarks(self._params())

    def _norm_of_current_gradients(self) -> torch.Tensor | None:
        """The perturbation norm if ``p.grad`` holds gradients computed since the last step."""
        params = self._params()
        if self._marks.unchanged(params) or all(p.grad is None for p in params):
            return None
        norm = self._grad_norm()
        return norm if bool(norm > 0) else None

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One SAM step (see the class docstring for the closure protocol).

        Returns the closure's loss at the current point when ``step``
        evaluated it, ``None`` when the caller had computed the gradients.
        """
        if closure is None:
            raise TypeError(
                "SAM.step() needs a closure: step(closure) where closure() zeroes the "
                "gradients, computes the loss, calls loss.backward() and returns the loss; "
                "or call first_step() and second_step() around your own backward passes"
            )
        loss = None
        with torch.no_grad():
            norm = self._norm_of_current_gradients()
        if norm is None:
            with torch.enable_grad():
                loss = closure()
            with torch.no_grad():
                norm = self._grad_norm()
        with torch.no_grad():
            self._perturb(norm, gradients_are_scratch=True)
        self.zero_grad()
        with torch.enable_grad():
            closure()
        self.second_step()
        return loss

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_marks", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._marks = GradientMarks(self._params())

    def _repr_extra(self) -> str:
        return f", rho={self.defaults['rho']}, adaptive={self.defaults['adaptive']}"


def _by_device_and_dtype(params: Iterable[torch.Tensor]) -> list[list[torch.Tensor]]:
    """``params`` in lists of one device and dtype each (what a foreach call takes)."""
    lists: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for p in params:
        lists.setdefault((p.device, p.dtype), []).append(p)
    return list(lists.values())


def _check_adaptive(adaptive: Any) -> None:
    if not isinstance(adaptive, bool):
        raise TypeError(f"adaptive must be True or False, got {adaptive!r}")


def _base_optimizer(params: Iterable[Any], base: Any, kwargs: dict[str, Any]) -> Optimizer:
    """Build the base optimizer from a class, or check that an instance has these parameters."""
    if not isinstance(base, Optimizer):
        if not callable(base):
            raise TypeError(
                "base_optimizer must be a torch.optim.Optimizer class or instance, got "
                f"{base!r} ({type(base).__name__})"
            )
        built = base(params, **kwargs)
        if not isinstance(built, Optimizer):
            raise TypeError(
                f"base_optimizer(params, ...) must build a torch.optim.Optimizer, got "
                f"{type(built).__name__}"
            )
        return built
    if kwargs:
        raise TypeError(
            f"SAM got base optimizer arguments {sorted(kwargs)} with an optimizer instance; "
            "give them to the instance, or pass its class"
        )
    given = set()
    for item in list(params):
        if isinstance(item, dict):
            if set(item) - {"params"}:
                raise ValueError(
                    "SAM was given parameter groups with options and an optimizer instance: "
                    "set per-group options (rho, adaptive, lr, ...) on the instance's groups"
                )
            tensors = item["params"]
            tensors = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
        else:
            tensors = [item]
        given |= {id(p[1] if isinstance(p, tuple) else p) for p in tensors}
    owned = {id(p) for group in base.param_groups for p in group["params"]}
    if given != owned:
        raise ValueError(
            f"SAM's params ({len(given)} tensors) are not the base optimizer's "
            f"({len(owned)} tensors): pass the same parameters to both"
        )
    return base
