"""One base for everything that wraps an optimizer: :class:`OptimizerWrapper`.

A wrapper changes *how* the wrapped ("inner") optimizer's steps are taken —
skip a non-finite step, search along the proposed move, accumulate several
micro-batches, and later Lookahead, SAM, Schedule-Free — while to the rest of
the world it *is* an optimizer:

* it is a ``torch.optim.Optimizer``, so ``descentlab.schedules.attach()``,
  torch's LR schedulers, ``torch.amp.GradScaler`` and trainers accept it;
* ``param_groups`` and ``defaults`` **are** the inner optimizer's objects
  (a scheduler writing ``group["lr"]`` on the wrapper changes the inner
  optimizer's learning rate; ``add_param_group`` adds to the inner one);
* ``state`` is the wrapper's *own* per-parameter state (e.g. Lookahead's slow
  weights; empty for most), keyed by parameter as in torch; the inner state is
  ``wrapper.optimizer.state``;
* ``state_dict()`` is the inner optimizer's (``"state"``, ``"param_groups"``
  exactly as it writes them, so torch tooling reads it and an unwrapped
  optimizer loads it) plus ``"wrappers"``: a list with one entry per wrapper
  level, outermost first, ``{"type": class name, "attributes": {...},
  "state": {parameter index: {...}}}``; ``load_state_dict`` takes its own entry
  and hands the rest down, and a state dict without entries (saved by an
  unwrapped optimizer) loads with the wrapper's own state left as it is;
* its step hooks (``register_step_pre_hook``/``post_hook``) run around the
  wrapper's ``step``, its state-dict hooks around its ``state_dict`` and
  ``load_state_dict``; ``zero_grad`` is the inner optimizer's;
* ``copy.deepcopy``, ``pickle`` and ``torch.save(wrapper)`` copy the whole
  chain (the inner optimizer and its parameters included), and a copy works
  on its own; like torch's optimizers, a copy has no hooks;
* wrappers nest: ``NonFiniteGuard(WithLineSearch(SGD(...)))``; ``unwrapped``
  is the innermost optimizer; public attributes the wrapper lacks are looked
  up on the inner optimizer.

Writing a new wrapper — override only what it changes:

* ``__init__(self, optimizer, ...)``: check the arguments, call
  ``super().__init__(optimizer)``, set the wrapper's settings as attributes;
* ``step(self, closure=None)``: the algorithm, calling ``self.optimizer.step``
  (the base refuses to step: there is no default meaning);
* ``_saved_attributes``: names of the attributes that make up the wrapper's
  own resumable state (counters, flags), saved and restored by the base;
  per-parameter tensors go in ``self.state[p]`` and are saved by the base
  (floating tensors come back in the parameter's dtype and device);
* optionally ``add_param_group`` (call ``super()`` first, then set up the new
  group's own state), ``zero_grad`` (e.g. accumulation keeps gradients between
  micro-batches), ``_repr_extra`` (text for ``repr``) and
  ``_upgrade_state_dict`` (read an older layout of the wrapper's checkpoints).
"""

from __future__ import annotations

import copy
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["OptimizerWrapper", "unwrap"]

#: instance attributes that are not part of a copy (hooks, a scheduler's patched step)
_TRANSIENT = frozenset({
    "_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks",
    "_zero_grad_profile_name", "step",
})


def unwrap(optimizer: Optimizer) -> Optimizer:
    """The innermost optimizer of a chain of wrappers (``optimizer`` itself if unwrapped)."""
    while isinstance(optimizer, OptimizerWrapper):
        optimizer = optimizer.optimizer
    return optimizer


class OptimizerWrapper(Optimizer):
    """Base class of the optimizer wrappers (the contract is in the module docstring).

    Args:
        optimizer: the optimizer to wrap (any ``torch.optim.Optimizer``,
            torch's, descentlab's, or another wrapper).
    """

    #: attributes saved in ``state_dict()`` and restored by ``load_state_dict()``
    _saved_attributes: tuple[str, ...] = ()

    def __init__(self, optimizer: Optimizer) -> None:
        # No Optimizer.__init__: the wrapper owns no parameter groups; it shares the inner ones.
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self.state: defaultdict[torch.Tensor, dict[str, Any]] = defaultdict(dict)
        self._init_hooks()

    def _init_hooks(self) -> None:
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()

    # -- the inner optimizer's groups are the wrapper's ----------------------------------------
    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        """The inner optimizer's parameter groups (the same list)."""
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property  # type: ignore[override]
    def defaults(self) -> dict[str, Any]:
        """The inner optimizer's defaults."""
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    @property
    def unwrapped(self) -> Optimizer:
        """The innermost optimizer."""
        return unwrap(self)

    def __getattr__(self, name: str) -> Any:
        # only reached when normal lookup fails; never for private names (pickling, torch probes)
        inner = self.__dict__.get("optimizer")
        if inner is None or name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(inner, name)

    # -- the Optimizer API -----------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """A wrapper's step (subclasses define it)."""
        raise NotImplementedError(f"{type(self).__name__} does not define step()")

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero (or drop) the gradients, as the inner optimizer does."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the inner optimizer."""
        self.optimizer.add_param_group(param_group)

    # -- state -----------------------------------------------------------------------------
    def _param_order(self) -> list[torch.Tensor]:
        seen: dict[int, torch.Tensor] = {}
        for group in self.param_groups:
            for p in group["params"]:
                seen.setdefault(id(p), p)
        return list(seen.values())

    def _wrapper_entry(self) -> dict[str, Any]:
        index = {id(p): i for i, p in enumerate(self._param_order())}
        return {
            "type": type(self).__name__,
            "attributes": {name: getattr(self, name) for name in self._saved_attributes},
            "state": {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index},
        }

    def _load_wrapper_entry(self, entry: dict[str, Any]) -> None:
        for name in self._saved_attributes:
            if name in entry["attributes"]:
                setattr(self, name, copy.deepcopy(entry["attributes"][name]))
        order = self._param_order()
        state: defaultdict[torch.Tensor, dict[str, Any]] = defaultdict(dict)
        for i, saved in entry["state"].items():
            if not 0 <= int(i) < len(order):
                raise ValueError(
                    f"state_dict holds {type(self).__name__} state for parameter {i}, but the "
                    f"optimizer has {len(order)} parameters"
                )
            p = order[int(i)]
            state[p] = {k: _cast_like(v, p) for k, v in saved.items()}
        self.state = state

    def _upgrade_state_dict(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """Convert an older checkpoint layout of this wrapper (default: none)."""
        return state_dict

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict plus this wrapper's entry (see the module docstring)."""
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        state_dict = dict(self.optimizer.state_dict())
        state_dict["wrappers"] = [self._wrapper_entry(), *state_dict.get("wrappers", [])]
        for hook in self._optimizer_state_dict_post_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load :meth:`state_dict` output, or a state dict of the unwrapped optimizer."""
        state_dict = dict(state_dict)
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        state_dict = self._upgrade_state_dict(dict(state_dict))
        entries = list(state_dict.pop("wrappers", []))
        own = None
        if entries:
            if entries[0].get("type") != type(self).__name__:
                raise ValueError(
                    f"state_dict was saved by a {entries[0].get('type')!r} wrapper at this level, "
                    f"this is a {type(self).__name__!r}; wrap the optimizers in the same order "
                    "(a state dict of the unwrapped optimizer loads into any wrapper)"
                )
            own = entries.pop(0)
        if entries:
            state_dict["wrappers"] = entries
        self.optimizer.load_state_dict(state_dict)
        if own is not None:
            self._load_wrapper_entry(own)
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    # -- copies ----------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _TRANSIENT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_hooks()

    def _repr_extra(self) -> str:
        """Text after the inner optimizer in ``repr`` (e.g. ``", k=5"``)."""
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.optimizer!r}{self._repr_extra()})"


def _cast_like(value: Any, param: torch.Tensor) -> Any:
    """A copy of saved ``value`` with floating tensors in ``param``'s dtype and device."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and param.is_floating_point():
            return value.to(device=param.device, dtype=param.dtype, copy=True)
        return value.to(device=param.device, copy=True)
    if isinstance(value, dict):
        return {k: _cast_like(v, param) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_like(v, param) for v in value)
    return copy.deepcopy(value)
