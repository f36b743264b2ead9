r"""Lookahead over any optimizer: :class:`Lookahead` (Zhang et al. 2019).

The wrapped ("fast") optimizer takes ``k`` steps from the slow weights
:math:`\phi`; then the slow weights move part of the way towards where the
fast weights :math:`\theta` went, and the fast weights restart from there:

.. math:: \phi \leftarrow \phi + \alpha\,(\theta - \phi), \qquad \theta \leftarrow \phi .

With ``pullback_momentum`` the base optimizer's momentum buffer ``m``
(``state[p]["momentum_buffer"]``: SGD's and RMSprop's) is handled at each
synchronisation too — ``"reset"``: :math:`m \leftarrow 0`; ``"pullback"``:
interpolated like the weights against a slow copy :math:`m_\phi`,
:math:`m \leftarrow \alpha m + (1 - \alpha) m_\phi,\ m_\phi \leftarrow m`
(both from the implementations, not the paper). ``"none"`` (default) leaves
it alone.

Reference: M. R. Zhang, J. Lucas, G. Hinton, J. Ba, "Lookahead Optimizer:
k steps forward, 1 step back", NeurIPS 2019 (k = 5, α = 0.5 are their
defaults; they report robustness to both).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from descentlab.optim.validation import check_int, check_interval
from descentlab.wrappers.base import OptimizerWrapper, unwrap

__all__ = ["Lookahead", "PULLBACK_MOMENTUM"]

#: the values ``pullback_momentum`` takes
PULLBACK_MOMENTUM = ("none", "reset", "pullback")

_LEGACY_KEYS = ("lookahead_state", "base_optimizer")  # pytorch_optimizer's checkpoint layout


class Lookahead(OptimizerWrapper):
    r"""Lookahead: k fast steps, then back towards slow weights (Zhang et al., 2019).

    The arguments are ``pytorch_optimizer.Lookahead``'s::

        opt = descentlab.Lookahead(descentlab.AdamW(model.parameters(), lr=1e-3), k=5, alpha=0.5)
        loss.backward()
        opt.step()                       # the inner step; every k-th also synchronises

    ``optimizer`` may also be a class, built as ``optimizer(params, **kwargs)``
    from ``params=`` in ``kwargs``: ``Lookahead(torch.optim.AdamW,
    params=model.parameters(), lr=1e-3)``. ``step(closure)`` hands the
    closure to the inner optimizer (so ``Lookahead(SAM(...))`` works) and
    returns its loss.

    Each parameter group counts its own steps (a group added later starts
    at 0). At a synchronisation only the parameters that have a gradient are
    moved (as in ``pytorch_optimizer``); the others keep their fast weights
    and slow weights until a synchronisation at which they have one.
    To evaluate at the slow weights: :meth:`backup_and_load_cache`, evaluate,
    :meth:`clear_and_load_backup` (``pytorch_optimizer``'s names).

    It is an :class:`~descentlab.wrappers.OptimizerWrapper`: schedules and
    torch's LR schedulers drive the inner optimizer's ``param_groups``;
    ``state[p]`` holds the slow weights (``"slow_params"``, and
    ``"slow_momentum"`` for ``"pullback"``), saved in ``state_dict()``'s
    Lookahead entry next to the inner state; it copies, pickles and nests
    (``NonFiniteGuard(Lookahead(AdamW(...)))``: a skipped step is not counted).

    Args:
        optimizer: the optimizer to wrap (an instance, or a class with
            ``params=`` and its arguments in ``kwargs``).
        k: inner steps between synchronisations (integer >= 1, default 5).
        alpha: the slow weights' step :math:`\alpha \in [0, 1]` (default 0.5;
            1 is the inner optimizer alone, 0 never moves).
        pullback_momentum: ``"none"`` (default), ``"reset"`` or ``"pullback"``.

    Where implementations disagree:

    * ``pytorch_optimizer`` takes the slow weights when the wrapper is built;
      here when a parameter first takes part in a step (the same, unless the
      weights change in between, e.g. a checkpoint loaded into the model
      after building the optimizer, which ``pytorch_optimizer`` would then
      pull back towards the weights it was built with).
    * ``"reset"``/``"pullback"`` need a ``momentum_buffer``. With an inner
      optimizer that keeps none (Adam and the like) ``pytorch_optimizer``
      adds an unused zero buffer to its state; here a warning says that the
      option has no effect, and the inner state is left alone. Buffers are
      changed in place (descentlab's flat engine keeps them in one buffer).
    * ``pytorch_optimizer`` keeps the step counter in each param group
      (``group["counter"]``) and its own ``state_dict`` layout
      (``{"lookahead_state", "base_optimizer"}``); here the counters are in
      Lookahead's ``state_dict`` entry, and a ``pytorch_optimizer`` state
      dict loads too.
    """

    _saved_attributes = ("counters",)

    def __init__(
        self,
        optimizer: Optimizer | type[Optimizer],
        k: int = 5,
        alpha: float = 0.5,
        pullback_momentum: str = "none",
        **kwargs: Any,
    ) -> None:
        self.k = check_int("k", k, minimum=1)
        self.alpha = check_interval("alpha", alpha, 0.0, 1.0)
        if pullback_momentum not in PULLBACK_MOMENTUM:
            raise ValueError(
                f"pullback_momentum must be one of {PULLBACK_MOMENTUM}, got {pullback_momentum!r}"
            )
        self.pullback_momentum = pullback_momentum
        super().__init__(_inner_optimizer(optimizer, kwargs))
        base = unwrap(self.optimizer)
        self._momentum = pullback_momentum != "none" and "momentum" in base.defaults
        if pullback_momentum != "none" and not self._momentum:
            warnings.warn(
                f"Lookahead(pullback_momentum={pullback_momentum!r}) has no effect on "
                f"{type(base).__name__}: it keeps no momentum_buffer",
                stacklevel=2,
            )
        self.counters = [0] * len(self.param_groups)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the inner optimizer; its step counter starts at 0."""
        super().add_param_group(param_group)
        self.counters.append(0)

    def _take_slow_weights(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if "slow_params" not in state:
                    state["slow_params"] = p.detach().clone()
                    if self.pullback_momentum == "pullback":
                        state["slow_momentum"] = torch.zeros_like(p)

    @torch.no_grad()
    def _synchronise(self, group: dict[str, Any]) -> None:
        inner_state = unwrap(self.optimizer).state
        for p in group["params"]:
            if p.grad is None:
                continue
            slow = self.state[p]["slow_params"]
            p.lerp_(slow, 1.0 - self.alpha)
            slow.copy_(p)
            buf = inner_state.get(p, {}).get("momentum_buffer") if self._momentum else None
            if buf is None:
                continue
            if self.pullback_momentum == "reset":
                buf.zero_()
            else:
                slow_buf = self.state[p]["slow_momentum"]
                buf.lerp_(slow_buf, 1.0 - self.alpha)
                slow_buf.copy_(buf)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """The inner optimizer's step; every ``k``-th step of a group synchronises it."""
        self._take_slow_weights()
        loss = self.optimizer.step(closure)
        if len(self.counters) < len(self.param_groups):  # groups added to the inner optimizer
            self.counters += [0] * (len(self.param_groups) - len(self.counters))
        for i, group in enumerate(self.param_groups):
            self.counters[i] += 1
            if self.counters[i] >= self.k:
                self.counters[i] = 0
                self._synchronise(group)
        return loss

    @torch.no_grad()
    def backup_and_load_cache(self) -> None:
        """Keep the fast weights aside and load the slow weights (to evaluate at them)."""
        self._take_slow_weights()
        for p in self._params():
            self.state[p]["backup_params"] = p.detach().clone()
            p.copy_(self.state[p]["slow_params"])

    @torch.no_grad()
    def clear_and_load_backup(self) -> None:
        """Load back the fast weights kept by :meth:`backup_and_load_cache`."""
        for p in self._params():
            if "backup_params" not in self.state.get(p, {}):
                raise RuntimeError(
                    "clear_and_load_backup() without backup_and_load_cache() before it"
                )
            p.copy_(self.state[p].pop("backup_params"))

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _upgrade_state_dict(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        if not set(_LEGACY_KEYS) <= set(state_dict):
            return state_dict
        inner = dict(state_dict["base_optimizer"])
        groups = inner["param_groups"] = [dict(g) for g in inner["param_groups"]]
        counters = [int(g.pop("counter", 0)) for g in groups]
        index, state = 0, {}
        for gi, group in enumerate(groups):
            for pi in range(len(group["params"])):
                if (gi, pi) in state_dict["lookahead_state"]:
                    state[index] = state_dict["lookahead_state"][(gi, pi)]
                index += 1
        entry = {"type": type(self).__name__, "attributes": {"counters": counters},
                 "state": state}
        inner["wrappers"] = [entry, *inner.get("wrappers", [])]
        return inner

    def _repr_extra(self) -> str:
        return f", k={self.k}, alpha={self.alpha}, pullback_momentum={self.pullback_momentum!r}"


def _inner_optimizer(optimizer: Any, kwargs: dict[str, Any]) -> Optimizer:
    """An optimizer instance as given, or built from a class with ``params=`` in ``kwargs``."""
    if isinstance(optimizer, Optimizer):
        if kwargs:
            raise TypeError(
                f"Lookahead got arguments {sorted(kwargs)} with an optimizer instance; "
                "they are only for building an optimizer from its class"
            )
        return optimizer
    if not callable(optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer or its class, got {optimizer!r} "
            f"({type(optimizer).__name__})"
        )
    if "params" not in kwargs:
        raise TypeError(f"Lookahead({optimizer.__name__}, ...) needs params=... to build it")
    params = kwargs.pop("params")
    return optimizer(params, **kwargs)
