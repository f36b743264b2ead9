"""The optimizer shell shared by every rule-based algorithm.

:class:`RuleOptimizer` is a ``torch.optim.Optimizer`` that owns everything
that is the same for all algorithms — checking ``params``, parameter groups
and their hyperparameters, lazy state, closures, ``maximize``, the step
counter, ``state_dict`` — and hands the arithmetic to an *engine* running
each group's :class:`~descentlab.rules.base.Rule`. An algorithm is therefore
a rule (with its hyperparameters declared once) and a constructor with
torch.optim's argument names that passes them on: the ``defaults``, the
checks and the defaults for keys a checkpoint lacks all come from the rule's
declarations.

Several rules in one optimizer: a parameter group may name its rule
(``{"params": ..., "rule": "adamw"}``, a name of
:data:`descentlab.rules.RULES`); a group without one runs the class's rule.
A group of another rule takes its missing hyperparameters from *that* rule's
declared defaults (an ``"adamw"`` group in a Muon optimizer gets AdamW's
``lr=1e-3, weight_decay=1e-2``, not Muon's), and keeps no keys of the
class's rule. ``state_dict()`` keeps each group's ``"rule"`` key and state,
so it loads back, also into a fresh optimizer built with the same groups.

Non-finite gradients: a step does exactly what torch.optim does — the
values propagate (a NaN gradient makes the parameter and the moment buffers
NaN). To skip such steps instead, wrap the optimizer in
:class:`descentlab.guard.NonFiniteGuard`.

Checkpoints and copies. ``state_dict()`` has torch.optim's layout and key
names, so a state dict moves both ways between a descentlab optimizer and
the torch.optim class of the same name. Loading (and unpickling) goes
through :meth:`RuleOptimizer.__setstate__`, the one place that brings older
or foreign layouts up to date: a group key the checkpoint lacks (an option
added later, e.g. ``amsgrad``, ``nesterov``, ``decoupled_weight_decay``, or
one of ours such as ``momentum_form``) gets the value the option has when
it is not given (:meth:`RuleOptimizer.missing_group_defaults`); a ``step``
stored as a Python number becomes torch's float32 tensor; a state without
``step`` (torch's SGD keeps none) counts as one step taken; a sparse state
tensor (torch's SGD momentum after sparse gradients) is made dense.
``copy.deepcopy``, ``pickle`` and ``torch.save(optimizer)`` keep the engine's
name and rebuild the engine (its buffers and kernels are runtime objects).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from descentlab.engine import make_engine
from descentlab.engine.owners import check_placement
from descentlab.engine.shards import is_dtensor
from descentlab.rules import get_rule
from descentlab.rules.base import TENSOR, Rule
from descentlab.rules.cautious import with_cautious
from descentlab.rules.low_precision import (
    adopt_loaded_state,
    declares_state_precision,
    with_state_precision,
)
from descentlab.validation import check_params

__all__ = ["RuleOptimizer"]

#: Group keys the shell itself reads (besides ``params`` and each rule's declarations).
SHELL_DEFAULTS: dict[str, Any] = {"maximize": False}

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


def _modernise_param_state(param: torch.Tensor, state: dict[str, Any]) -> None:
    """Bring one parameter's loaded state to the current layout (see the module docstring)."""
    step = state.get("step")
    if step is None:
        state["step"] = torch.tensor(1.0)  # torch's SGD keeps no step; a state means one was taken
    elif not isinstance(step, torch.Tensor):
        state["step"] = torch.tensor(float(step), dtype=torch.float32)
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_sparse and not param.is_sparse:
            state[key] = value.to_dense()


class RuleOptimizer(torch.optim.Optimizer):
    """Base class of descentlab's rule-based optimizers (see the module docstring).

    Subclasses set :attr:`rule` and define ``__init__`` with torch.optim's
    argument names and defaults (equal to the rule's declarations, which a
    test checks), passing their arguments on as ``super().__init__(params,
    locals(), engine=engine, **torch_options)``.

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs, or of
            parameter-group dicts (which may name their ``"rule"``).
        values: the constructor's arguments; every hyperparameter the rule
            declares is taken from here (its declared default if absent), the
            rest is ignored.
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
    #: Constructor arguments of the reference class that choose an implementation and are
    #: accepted and ignored (lion-pytorch's ``use_triton``); they are not hyperparameters.
    ignored_arguments: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        params: Iterable[Any],
        values: Mapping[str, Any],
        *,
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        _check_torch_options(type(self).__name__, torch_options)
        defaults = self.declared_defaults(self.rule)
        defaults = {k: values.get(k, v) for k, v in defaults.items()}
        defaults["maximize"] = bool(defaults["maximize"])
        self.rule.check(defaults)  # hyperparameters first, as torch.optim checks them
        self._engine = make_engine(engine)
        super().__init__(check_params(params), defaults)
        self._engine.prepare(self)

    @staticmethod
    def declared_defaults(rule: Rule) -> dict[str, Any]:
        """A group's keys and their defaults under ``rule``: its declarations and the shell's."""
        return {**rule.defaults(), **SHELL_DEFAULTS}

    def named_rule(self, group: Mapping[str, Any]) -> Rule:
        """The algorithm a group runs: the rule it names (``group["rule"]``), else the class's."""
        name = group.get("rule")
        return self.rule if name is None or name == self.rule.name else get_rule(name)

    def rule_for(self, group: Mapping[str, Any]) -> Rule:
        """The rule the engine steps a group with: :meth:`named_rule`, with the cautious mask
        if the group asks for it (:mod:`descentlab.rules.cautious`) and its state stored in
        the group's ``state_precision`` (:mod:`descentlab.rules.low_precision`)."""
        rule = self.named_rule(group)
        if group.get("cautious"):
            rule = with_cautious(rule)
        precision = group.get("state_precision", "full")
        return rule if precision == "full" else with_state_precision(rule, precision)

    def check_group(self, group: dict[str, Any]) -> None:
        """Validate one parameter group's hyperparameters with its rule's declared checks."""
        self.rule_for(group).check(group)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (as torch.optim does) after checking its parameters and hyperparameters.

        A group naming another rule is completed from that rule's declared
        defaults (see the module docstring).
        """
        known = {id(p) for g in getattr(self, "param_groups", []) for p in g["params"]}
        params = check_params([param_group])[0]["params"]
        for p in params:
            p = p[1] if isinstance(p, tuple) else p
            if id(p) in known:
                raise ValueError(
                    f"a parameter of shape {tuple(p.shape)} is already in another parameter group"
                )
        named = self.named_rule(param_group)
        own = named is self.rule
        base = self.defaults if own else self.declared_defaults(named)
        merged = {**base, **param_group, "params": params}
        named.check(merged)
        rule = self.rule_for(merged)
        if rule.kind == TENSOR:
            for p in params:
                p = p[1] if isinstance(p, tuple) else p
                rule.check_param(p, merged)
                if is_dtensor(p):
                    check_placement(p, rule.name)
        given = {**param_group, "params": params}
        if not own:
            given = {**base, **given}
        foreign = set(self.defaults) - set(given)
        super().add_param_group(given)
        if not own:  # torch filled in the class rule's keys: drop those the group's rule lacks
            for key in foreign:
                given.pop(key, None)
        self._engine.prepare(self)  # lay the new group out now: aliases taken later stay live

    @classmethod
    @functools.cache
    def signature_defaults(cls) -> dict[str, Any]:
        """The constructor's keyword defaults (compared with the declarations by the tests)."""
        sig = inspect.signature(cls.__init__)
        return {
            name: p.default
            for name, p in sig.parameters.items()
            if p.default is not inspect.Parameter.empty
            and name != "engine" and name not in cls.ignored_arguments
        }

    def missing_group_defaults(self, group: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The value of each key of ``group`` (default: a group of the class's rule) it lacks.

        A key missing from a saved group means the option did not exist (or
        was not ours) when the checkpoint was written, so the algorithm ran as
        if the option were not given: the declared default of the group's
        rule (``amsgrad=False``, ``nesterov=False``, ``momentum_form="heavy_ball"``,
        AdamW's ``decoupled_weight_decay=True``, ...), as torch.optim's
        ``__setstate__`` fills it.
        """
        return self.declared_defaults(self.rule_for(group or {}))

    def __getstate__(self) -> dict[str, Any]:
        """torch.optim's picklable state plus the engine's name (not its buffers or kernels)."""
        return {**super().__getstate__(), "engine": self._engine.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled optimizer, or finish ``load_state_dict`` (see the module docstring).

        Unpickling rebuilds the engine by name and lets it prepare for the
        parameter groups (``engine.prepare``).
        """
        state = dict(state)
        engine = state.pop("engine", None)
        ours = "differentiable" in (state.get("defaults") or self.defaults)
        super().__setstate__(state)
        if not ours:  # torch's base adds it for its own old pickles; our groups never had it
            self.defaults.pop("differentiable", None)
        for group in self.param_groups:
            for key, value in self.missing_group_defaults(group).items():
                group.setdefault(key, value)
            for p in group["params"]:
                if self.state.get(p):
                    _modernise_param_state(p, self.state[p])
        if engine is not None or "_engine" not in self.__dict__:
            self._engine = make_engine(engine or "auto")
            self._engine.prepare(self)

    @property
    def engine(self) -> str:
        """Name of the engine that runs this optimizer's steps."""
        return self._engine.name

    @staticmethod
    def profile_hook_step(func: Callable[..., Any]) -> Callable[..., Any]:
        """torch.optim's wrapper of ``step`` (its hooks, the profiler's ``Optimizer.step#…``
        range), entering the profiler range only while a profiler runs.

        torch's wrapper enters ``record_function`` at every step, about 14 µs
        even with no profiler running: a tenth of a step of a 0.1M-parameter
        model. With no hooks registered and no profiler running, this calls
        the step directly; otherwise it is torch's wrapper.
        """
        hooked = torch.optim.Optimizer.profile_hook_step(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self = args[0]
            if (
                torch.autograd._profiler_enabled()
                or self._optimizer_step_pre_hooks
                or self._optimizer_step_post_hooks
                or _global_optimizer_pre_hooks
                or _global_optimizer_post_hooks
            ):
                return hooked(*args, **kwargs)
            out = func(*args, **kwargs)
            self._optimizer_step_code()
            return out

        return wrapper

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimisation step (without autograd recording, as torch.optim's).

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
        enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)  # (torch.no_grad() costs microseconds more per step)
        try:
            for group in self.param_groups:
                self._engine.step_group(self, group)
        finally:
            torch._C._set_grad_enabled(enabled)
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state as torch.optim does, keeping the rule's scalar state in its saved dtype.

        torch casts every floating state tensor except ``step`` to its
        parameter's dtype; bookkeeping scalars (e.g. NAdam's ``mu_product``)
        are restored in float64 instead (the rules keep them in float64, and
        torch.optim's float32 ones widen exactly), so that a resumed run
        continues bit-identically even for low-precision parameters. Each
        group keeps its own ``state_precision`` (how this optimizer stores its
        state, as ``param_names`` stay torch's own), and the loaded state is
        brought into it, whichever precision it was saved in
        (:func:`~descentlab.rules.low_precision.adopt_loaded_state`).
        """
        storage = [g.get("state_precision") for g in self.param_groups]
        super().load_state_dict(state_dict)
        saved = state_dict["state"]
        for group, precision in zip(self.param_groups, storage, strict=True):
            if precision is not None:  # a storage choice of this optimizer, not the checkpoint's
                group["state_precision"] = precision
        for group, saved_group in zip(self.param_groups, state_dict["param_groups"], strict=True):
            named = self.named_rule(group)
            for p, i in zip(group["params"], saved_group["params"], strict=True):
                for key in named.scalar_state:
                    if i in saved and key in saved[i]:
                        value = torch.as_tensor(saved[i][key]).detach()
                        self.state[p][key] = value.to(p.device, torch.float64, copy=True)
                if declares_state_precision(named) and self.state.get(p):
                    adopt_loaded_state(named, group, p, self.state[p], saved.get(i, {}))
        self._engine.state_loaded(self)
