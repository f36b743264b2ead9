r"""The shell shared by the Schedule-Free optimizers: modes, averaging weights, checkpoints.

Schedule-Free methods (Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky,
"The Road Less Scheduled", NeurIPS 2024) keep three sequences per parameter:

.. math::

    z_{t+1} &= z_t - \gamma_t\, d_t                          && \text{(the base step)}\\
    x_{t+1} &= (1 - c_{t+1})\, x_t + c_{t+1}\, z_{t+1}      && \text{(the average: evaluate here)}\\
    y_{t+1} &= \beta\, x_{t+1} + (1 - \beta)\, z_{t+1}       && \text{(train here: gradients at } y)

where :math:`d_t` is the base method's direction at :math:`y_t` (the gradient
for SGD, the Adam-normalised gradient for AdamW/RAdam, plus weight decay
:math:`\lambda y_t`), :math:`\beta` is the momentum (``momentum`` or
``betas[0]``) and the averaging weight is

.. math::

    w_t = t^{r}\, \gamma_{\max,t}^{p},\qquad c_{t} = w_t / \textstyle\sum_{s\le t} w_s,

with :math:`\gamma_{\max,t}` the largest (warmed-up) learning rate so far,
``r`` = ``r`` and ``p`` = ``weight_lr_power``. As in the ``schedulefree``
package only :math:`z` is stored: the parameter holds :math:`y` in train mode
and :math:`x` in eval mode, and the step updates :math:`y` in place through

.. math::

    y_{t+1} = (1 - c)\, y_t + c\, z_t + \gamma\,(\beta (1 - c) - 1)\, d_t,

which is the recursion above with :math:`x_t = (y_t - (1-\beta) z_t)/\beta`
eliminated (so :math:`0 < \beta < 1` is required).

**Modes.** :meth:`train` moves the parameters to :math:`y`
(``p ← lerp(p, z, 1 − β)``), :meth:`eval` to :math:`x`
(``p ← lerp(p, z, 1 − 1/β)``); each is a no-op in its own mode. The optimizer
starts in **eval** mode, as the reference does, and :meth:`step` refuses to
run outside train mode. Call ``optimizer.train()`` with ``model.train()``
and ``optimizer.eval()`` with ``model.eval()`` — evaluating or saving the
model weights in train mode gives :math:`y`, not the average :math:`x`
(the most common mistake with these methods).
:func:`~descentlab.schedule_free.evaluation.evaluation_mode` does the pair
for a block of code and puts the training point back bit for bit.

**How a step runs.** The update is an elementwise rule
(:mod:`descentlab.rules.schedule_free`), so the engines run it as they run
Adam: ``engine="flat"`` in chunks of the flat buffers, ``"compiled"`` as one
fused loop per buffer reading ``y, z, g`` (and ``v``) once, ``"auto"`` (the
default) flat at first, compiled once a background compile is ready (large
buffers). Before each group's step the shell advances the group's
bookkeeping on the host (the scheduled learning rate, ``lr_max``, the
weight sum, so the averaging weight :math:`c`); :meth:`train`/:meth:`eval`
are one ``lerp`` per flat buffer (:meth:`Engine.state_runs`).

**Checkpoints.** The per-group bookkeeping is kept in the parameter groups
under the reference's keys (``k``, ``train_mode``, ``weight_sum``,
``lr_max``, ``scheduled_lr``), the per-parameter state as ``z`` (and
``exp_avg_sq``) with the engines' ``step`` counter (which the package
ignores; a package checkpoint without it loads), so state dicts move both
ways between these classes and the ``schedulefree`` package.
``state_dict()`` works in either mode and records it (``train_mode`` of
each group); ``load_state_dict`` restores it. Saved
together with the model's weights, a checkpoint is therefore consistent
whichever mode it was taken in: the weights are :math:`y` if
``train_mode`` is saved True, :math:`x` if False, and after loading both,
``train()`` / ``eval()`` move to whichever point is wanted (tested:
a checkpoint taken in train mode resumes bit-identically, and ``eval()``
after loading it gives the same :math:`x` as the original; one taken in eval
mode resumes, after ``train()``, exactly as the original run does after its
own ``train()``). What no optimizer can fix: model weights saved *without*
the optimizer while in train mode are :math:`y`; call ``eval()`` first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch

from descentlab.optim.base import RuleOptimizer
from descentlab.rules.schedule_free import BOOKKEEPING, ScheduleFreeRule

__all__ = ["ScheduleFreeOptimizer", "BOOKKEEPING"]

_NOT_TRAINING = (
    "{name}.step() was called in eval mode: call optimizer.train() before training steps "
    "(together with model.train()) and optimizer.eval() before evaluating or saving the model"
)


class ScheduleFreeOptimizer(RuleOptimizer):
    """Base class of the Schedule-Free optimizers (the method is in the module docstring).

    A subclass sets :attr:`rule` (a :class:`~descentlab.rules.schedule_free.ScheduleFreeRule`)
    and defines ``__init__`` with the ``schedulefree`` package's arguments and
    ``engine``. A group may name another Schedule-Free rule
    (``{"params": ..., "rule": "sgd_schedulefree"}``); other rules are refused
    (they have no ``y``/``z`` to swap).
    """

    rule: ClassVar[ScheduleFreeRule]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group as torch.optim does (checked), with the bookkeeping of a fresh group."""
        rule = self.named_rule(param_group)
        if not isinstance(rule, ScheduleFreeRule):
            raise ValueError(
                f"{type(self).__name__} keeps y and z for every group; a group cannot run "
                f"rule {rule.name!r} (use a separate optimizer for those parameters)"
            )
        super().add_param_group({**rule.group_state(param_group), **param_group})

    def missing_group_defaults(self, group: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The declared defaults, and the bookkeeping as at the start (an older checkpoint)."""
        return {**super().missing_group_defaults(group), **BOOKKEEPING}

    # -- modes -------------------------------------------------------------------------------
    @property
    def training(self) -> bool:
        """True in train mode (the parameters hold ``y``), False in eval mode (``x``)."""
        return all(group["train_mode"] for group in self.param_groups)

    @torch.no_grad()
    def _move(self, to_train: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == to_train:
                continue
            beta = self.rule_for(group).momentum(group)
            weight = 1.0 - beta if to_train else 1.0 - 1.0 / beta
            pairs = [(p, s["z"]) for p, s in self._engine.state_runs(self, group) if "z" in s]
            if pairs:
                ps, zs = zip(*pairs, strict=True)
                torch._foreach_lerp_(list(ps), list(zs), weight)
            group["train_mode"] = to_train

    def train(self) -> None:
        """Switch to train mode: the parameters become the gradient point ``y``."""
        self._move(True)

    def eval(self) -> None:
        """Switch to eval mode: the parameters become the average ``x`` (evaluate and save here)."""
        self._move(False)

    # -- stepping ----------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimisation step (train mode only).

        Args:
            closure: optional; re-evaluates the model and returns the loss.

        Returns:
            The closure's loss, or ``None`` without a closure.
        """
        if not self.training:
            raise RuntimeError(_NOT_TRAINING.format(name=type(self).__name__))
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:  # before any bookkeeping moves: a refused step
            for p in group["params"]:    # changes nothing
                if p.grad is not None and p.grad.is_sparse:
                    raise RuntimeError(
                        f"{type(self).__name__} does not support sparse gradients "
                        f"(a parameter of shape {tuple(p.shape)} has one)"
                    )
        for group in self.param_groups:
            self._advance(group)
        super().step()  # the engine steps every group with the rule (which reads the above)
        return loss

    def _advance(self, group: dict[str, Any]) -> None:
        """The group's bookkeeping for its next step (the rule reads it: ``rule.scalars``)."""
        rule = self.rule_for(group)
        step = group["k"] = group["k"] + 1
        lr = group["scheduled_lr"] = rule.scheduled_lr(group, step)
        group["lr_max"] = max(lr, group["lr_max"])
        group["weight_sum"] = group["weight_sum"] + rule.averaging_weight(group)
