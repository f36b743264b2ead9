"""Drive any optimizer's hyperparameters from schedules, per parameter group.

:class:`ScheduleController` writes ``schedule(t)`` into
``optimizer.param_groups`` for any key a group has (``lr``, ``momentum``,
``weight_decay``, ``betas[0]`` a.k.a. ``beta1``, ``eps``, ...), with one
set of schedules for all groups or a different set per group. It is a
``torch.optim.lr_scheduler.LRScheduler`` subclass, so trainers that drive
torch schedulers (Lightning's ``lr_scheduler`` config, plain loops,
``get_last_lr()`` loggers) drive it unchanged.

It needs only the public ``torch.optim.Optimizer`` API, so it works for
torch's optimizers and descentlab's alike. descentlab's engine reads
hyperparameters from the groups on every step, so a new value never
triggers a recompilation; a hyperparameter stored as a tensor (e.g.
``lr=torch.tensor(1e-3)`` for a fused or capturable optimizer) is updated
in place with ``fill_`` so its identity, and any graph that captured it,
stays valid.

Resume is exact: the controller stores the step, the initial values (for
``relative=True``) and the state of stateful schedules, and every value is
recomputed in closed form from them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from descentlab.optim.validation import check_interval, check_learning_rate, check_nonnegative
from descentlab.schedules.base import Schedule, as_schedule

__all__ = ["ScheduleController", "attach"]

_ALIASES = {"beta1": ("betas", 0), "beta2": ("betas", 1)}
_INDEXED = re.compile(r"^(\w+)\[(\d+)\]$")

SpecMapping = Mapping[str, "Schedule | float"]


def _parse_key(key: str) -> tuple[str, int | None]:
    if not isinstance(key, str):
        raise TypeError(f"hyperparameter names must be strings, got {key!r}")
    if key in _ALIASES:
        return _ALIASES[key]
    m = _INDEXED.match(key)
    if m:
        return m.group(1), int(m.group(2))
    return key, None


def _read(group: dict[str, Any], name: str, index: int | None) -> float:
    value = group[name] if index is None else group[name][index]
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


def _write(group: dict[str, Any], name: str, index: int | None, value: float) -> None:
    if index is None:
        if isinstance(group[name], torch.Tensor):
            group[name].fill_(value)
        else:
            group[name] = value
        return
    items = list(group[name])
    if isinstance(items[index], torch.Tensor):
        items[index].fill_(value)
    else:
        items[index] = value
    group[name] = tuple(items) if isinstance(group[name], tuple) else items


def _check_value(label: str, name: str, value: float) -> float:
    if name == "lr":
        return check_learning_rate(value, label)
    if name == "betas":
        return check_interval(label, value, 0.0, 1.0, high_closed=False)
    return check_nonnegative(label, value)


class ScheduleController(LRScheduler):
    """Set param-group hyperparameters from schedules of the step.

    Args:
        optimizer: any ``torch.optim.Optimizer``.
        schedules: either one mapping ``{"lr": s, "momentum": m, ...}``
            applied to every parameter group (including groups added later),
            or a list with one mapping (or ``None`` to leave the group alone)
            per group. Keys are group keys; ``"betas[0]"``/``"beta1"`` and
            ``"betas[1]"``/``"beta2"`` address an element of a tuple. Values
            are :class:`~descentlab.schedules.base.Schedule` objects or
            numbers (held constant).
        relative: if ``True``, each group's value is its value at attach
            time multiplied by the schedule (schedules are then factors,
            like ``LambdaLR``'s ``lr_lambda``); per-group base learning
            rates are kept. Default ``False``: schedules give absolute values.

    Creating the controller writes the step-0 values. Call :meth:`step`
    once after each ``optimizer.step()``; ``step(metric)`` first feeds a
    validation metric to stateful schedules (:class:`ReduceOnPlateau`), and
    :meth:`observe` does only that (for per-batch stepping with per-epoch
    validation). ``last_epoch`` is the current step, as in torch.

    Every written value is checked (``lr``, ``momentum``, ``weight_decay``
    ``>= 0``; betas in ``[0, 1)``), so a schedule that goes negative fails
    loudly, naming the group, the key and the step.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedules: SpecMapping | Sequence[SpecMapping | None],
        *,
        relative: bool = False,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self.relative = bool(relative)
        self._shared: dict[tuple[str, int | None], Schedule] | None = None
        self._per_group: list[dict[tuple[str, int | None], Schedule]] = []
        if isinstance(schedules, Mapping):
            self._shared = self._parse_spec(schedules, "schedules")
        elif isinstance(schedules, Sequence) and not isinstance(schedules, str):
            n = len(optimizer.param_groups)
            if len(schedules) != n:
                raise ValueError(
                    f"schedules has {len(schedules)} entries but the optimizer has {n} "
                    "param groups; give one mapping (or None) per group"
                )
            self._per_group = [
                {} if spec is None else self._parse_spec(spec, f"schedules[{i}]")
                for i, spec in enumerate(schedules)
            ]
        else:
            raise TypeError(
                "schedules must be a mapping {hyperparameter: schedule} or a list of them, one "
                f"per param group, got {type(schedules).__name__}"
            )
        self._initial: list[dict[str, float]] = []
        for i in range(len(optimizer.param_groups)):
            self._record_initial(i)
        self.base_lrs = [float(_read(g, "lr", None)) for g in optimizer.param_groups]
        self.last_epoch = 0
        self._step_count = 1
        self._apply()

    @staticmethod
    def _parse_spec(spec: Any, where: str) -> dict[tuple[str, int | None], Schedule]:
        if not isinstance(spec, Mapping):
            raise TypeError(f"{where} must be a mapping, got {type(spec).__name__}")
        if not spec:
            raise ValueError(f"{where} is empty: name at least one hyperparameter to schedule")
        parsed: dict[tuple[str, int | None], Schedule] = {}
        for k, v in spec.items():
            key = _parse_key(k)
            if key in parsed:
                raise ValueError(f"{where} names the same hyperparameter twice: {k!r}")
            parsed[key] = as_schedule(v, f"{where}[{k!r}]")
        return parsed

    def _specs(self, i: int) -> dict[tuple[str, int | None], Schedule]:
        if self._shared is not None:
            return self._shared
        return self._per_group[i] if i < len(self._per_group) else {}

    def _record_initial(self, i: int) -> None:
        group = self.optimizer.param_groups[i]
        initial: dict[str, float] = {}
        for name, index in self._specs(i):
            label = name if index is None else f"{name}[{index}]"
            if name not in group or (index is not None and len(group[name]) <= index):
                have = sorted(k for k in group if k != "params")
                raise ValueError(
                    f"param group {i} has no hyperparameter {label!r}; it has {have}"
                )
            initial[label] = _read(group, name, index)
        self._initial.append(initial)

    def schedules(self) -> list[Schedule]:
        """Each distinct schedule object once, in group then key order."""
        seen: dict[int, Schedule] = {}
        groups = [self._shared] if self._shared is not None else self._per_group
        for spec in groups:
            for s in (spec or {}).values():
                seen.setdefault(id(s), s)
        return list(seen.values())

    def values_at(self, step: int) -> list[dict[str, float]]:
        """The values each group gets at ``step`` (with the current plateau state)."""
        out = []
        for i in range(len(self.optimizer.param_groups)):
            row = {}
            for (name, index), sched in self._specs(i).items():
                label = name if index is None else f"{name}[{index}]"
                v = sched(step)
                if self.relative:
                    v = self._initial[i][label] * v
                row[label] = v
            out.append(row)
        return out

    def _apply(self) -> None:
        groups = self.optimizer.param_groups
        while len(self._initial) < len(groups):  # groups added with add_param_group
            self._record_initial(len(self._initial))
        rows = self.values_at(self.last_epoch)
        for i, (group, row) in enumerate(zip(groups, rows, strict=True)):
            for label, v in row.items():
                name, index = _parse_key(label)
                where = f"param_groups[{i}][{label!r}] at step {self.last_epoch}"
                _write(group, name, index, _check_value(where, name, v))
        self._last_lr = [float(_read(g, "lr", None)) for g in groups]

    def get_lr(self) -> list[float]:
        """Learning rates of the groups at the current step (torch's ``LRScheduler`` API)."""
        return [float(_read(g, "lr", None)) for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The learning rates last written, one per group, as torch's ``get_last_lr()``."""
        return list(self._last_lr)

    def get_last_values(self, key: str) -> list[float]:
        """The current value of ``key`` (e.g. ``"momentum"``, ``"beta1"``) in every group."""
        name, index = _parse_key(key)
        return [_read(g, name, index) for g in self.optimizer.param_groups]

    def observe(self, metric: float | torch.Tensor) -> None:
        """Feed a validation metric to stateful schedules at the current step and re-apply."""
        value = float(metric)
        for sched in self.schedules():
            sched.observe(value, self.last_epoch)
        self._apply()

    def step(self, metrics: float | torch.Tensor | None = None) -> None:  # type: ignore[override]
        """Advance one step (call after ``optimizer.step()``).

        ``metrics``, if given, is first fed to stateful schedules at the
        current step, as in ``ReduceLROnPlateau.step(metrics)``.
        """
        if metrics is not None:
            for sched in self.schedules():
                sched.observe(float(metrics), self.last_epoch)
        self.last_epoch += 1
        self._step_count += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        """Step, initial values and the state of stateful schedules (no schedule objects)."""
        return {
            "last_epoch": self.last_epoch,
            "relative": self.relative,
            "initial": [dict(d) for d in self._initial],
            "schedules": [s.state_dict() for s in self.schedules()],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output and write the values of the restored step."""
        states = state_dict["schedules"]
        scheds = self.schedules()
        if len(states) != len(scheds):
            raise ValueError(
                f"state_dict holds {len(states)} schedule states, this controller has "
                f"{len(scheds)} schedules"
            )
        if bool(state_dict["relative"]) != self.relative:
            raise ValueError(
                f"state_dict was saved with relative={state_dict['relative']!r}, this "
                f"controller has relative={self.relative!r}"
            )
        for sched, st in zip(scheds, states, strict=True):
            sched.load_state_dict(st)
        self._initial = [dict(d) for d in state_dict["initial"]]
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = self.last_epoch + 1
        self._apply()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(step={self.last_epoch}, relative={self.relative}, "
            f"groups={len(self.optimizer.param_groups)})"
        )


def attach(
    optimizer: Optimizer, *, relative: bool = False, **schedules: Schedule | float
) -> ScheduleController:
    """Schedule hyperparameters of every param group: ``attach(opt, lr=cos, beta1=m)``.

    Shorthand for ``ScheduleController(optimizer, {"lr": cos, "beta1": m})``;
    see :class:`ScheduleController` for per-group schedules.
    """
    if not schedules:
        raise ValueError("attach needs at least one schedule, e.g. attach(opt, lr=schedule)")
    return ScheduleController(optimizer, schedules, relative=relative)
