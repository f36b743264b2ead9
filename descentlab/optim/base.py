"""The optimizer shell shared by every elementwise algorithm.

:class:`RuleOptimizer` is a ``torch.optim.Optimizer`` that owns everything
that is the same for all algorithms — checking ``params``, parameter groups
and their hyperparameters, lazy state, closures, ``maximize``, the step
counter, ``state_dict`` — and hands the arithmetic to an *engine* running the
class's :class:`~descentlab.rules.base.Rule`. An algorithm is therefore a
rule, a constructor with torch.optim's argument names, and a
``check_group`` that validates its hyperparameters.

Non-finite gradients: a step does exactly what torch.optim does — the
values propagate (a NaN gradient makes the parameter and the moment buffers
NaN). To skip such steps instead, wrap the optimizer in
:class:`descentlab.guard.NonFiniteGuard`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch

from descentlab.engine import make_engine
from descentlab.optim.validation import check_learning_rate, check_params
from descentlab.rules.base import Rule

__all__ = ["RuleOptimizer"]

#: torch.optim keywords that choose an implementation rather than an algorithm.
TORCH_IMPLEMENTATION_OPTIONS = ("foreach", "fused", "capturable", "differentiable")


def _check_torch_options(owner: str, options: dict[str, Any]) -> None:
    """Accept torch.optim's implementation switches; refuse unknown keys and unsupported modes."""
    for key, value in options.items():
        if key not in TORCH_IMPLEMENTATION_OPTIONS:
            raise TypeError(f"{owner}() got an unexpected keyword argument {key!r}")
        if key in ("capturable", "differentiable") and value:
            raise ValueError(
                f"{key}={value!r} is not supported by descentlab's {owner}; "
                "use torch.optim for CUDA-graph capture or differentiating through the step"
            )


class RuleOptimizer(torch.optim.Optimizer):
    """Base class of descentlab's elementwise optimizers (see the module docstring).

    Subclasses set :attr:`rule`, define ``__init__`` with torch.optim's
    argument names and defaults, and override :meth:`check_group`.

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs, or of
            parameter-group dicts.
        defaults: the default hyperparameters of every group.
        engine: how steps run: ``"reference"`` (a per-tensor loop, the
            specification), ``"flat"`` (parameters, gradients and state in
            contiguous buffers, one eager update per buffer), ``"compiled"``
            (the same with one compiled, fused kernel per buffer) or
            ``"auto"`` (default: flat at once, compiled once a background
            compile is ready; see :mod:`descentlab.engine`).
        torch_options: torch.optim's implementation switches, accepted so that
            code written for torch.optim runs unchanged: ``foreach`` and
            ``fused`` are ignored (the engine decides how steps run);
            ``capturable`` and ``differentiable`` must be False.
    """

    rule: ClassVar[Rule]

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        *,
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        _check_torch_options(type(self).__name__, torch_options)
        self._engine = make_engine(engine)
        defaults = {**defaults, "maximize": bool(defaults.get("maximize", False))}
        super().__init__(check_params(params), defaults)
        self._engine.prepare(self)

    @staticmethod
    def check_group(group: dict[str, Any]) -> None:
        """Validate one parameter group's hyperparameters; subclasses extend this."""
        check_learning_rate(group["lr"])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (as torch.optim does) after checking its parameters and hyperparameters."""
        known = {id(p) for g in getattr(self, "param_groups", []) for p in g["params"]}
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        check_params([{**param_group, "params": params}])
        for p in params:
            p = p[1] if isinstance(p, tuple) else p
            if id(p) in known:
                raise ValueError(
                    f"a parameter of shape {tuple(p.shape)} is already in another parameter group"
                )
        merged = {**self.defaults, **param_group, "params": params}
        self.check_group(merged)
        super().add_param_group({**param_group, "params": params})
        self._engine.prepare(self)  # lay the new group out now: aliases taken later stay live

    @property
    def engine(self) -> str:
        """Name of the engine that runs this optimizer's steps."""
        return self._engine.name

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimisation step.

        Args:
            closure: optional; re-evaluates the model and returns the loss.
                It is called once, with gradients enabled, before the update.

        Returns:
            The closure's loss, or ``None`` without a closure.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._engine.step_group(self, group)
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state as torch.optim does, keeping the rule's scalar state in its saved dtype.

        torch casts every floating state tensor except ``step`` to its
        parameter's dtype; bookkeeping scalars (e.g. NAdam's ``mu_product``)
        are restored unchanged instead, so that a resumed run continues
        bit-identically even for low-precision parameters.
        """
        super().load_state_dict(state_dict)
        scalar_keys = self.rule.scalar_state
        if scalar_keys:
            saved = state_dict["state"]
            order = [p for g in self.param_groups for p in g["params"]]
            ids = [i for g in state_dict["param_groups"] for i in g["params"]]
            for p, i in zip(order, ids, strict=True):
                for key in scalar_keys:
                    if i in saved and key in saved[i]:
                        self.state[p][key] = saved[i][key].detach().clone().to(p.device)
        self._engine.state_loaded(self)
