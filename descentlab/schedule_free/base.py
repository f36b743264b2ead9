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

**Checkpoints.** The per-group bookkeeping is kept in the parameter groups
under the reference's keys (``k``, ``train_mode``, ``weight_sum``,
``lr_max``, ``scheduled_lr``), the per-parameter state as ``z`` (and
``exp_avg_sq``), so state dicts move both ways between these classes and the
``schedulefree`` package. ``state_dict()`` works in either mode and records
it (``train_mode`` of each group); ``load_state_dict`` restores it. Saved
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

from collections.abc import Callable, Iterable
from typing import Any

import torch

from descentlab._foreach import by_device_and_dtype
from descentlab.optim.validation import (
    check_int,
    check_interval,
    check_learning_rate,
    check_nonnegative,
    check_params,
)

__all__ = ["ScheduleFreeOptimizer", "BOOKKEEPING_KEYS"]

#: the per-group bookkeeping the reference keeps in its parameter groups, with start values
BOOKKEEPING_KEYS: dict[str, Any] = {
    "k": 0,
    "train_mode": False,
    "weight_sum": 0.0,
    "lr_max": -1.0,
    "scheduled_lr": 0.0,
}

_NOT_TRAINING = (
    "{name}.step() was called in eval mode: call optimizer.train() before training steps "
    "(together with model.train()) and optimizer.eval() before evaluating or saving the model"
)


def _real(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


#: Elements stepped at a time: every pass of a step runs over one piece (whole tensors up to
#: this size, or contiguous slices of larger ones) before the next piece, so the piece's
#: parameters, gradients, state and temporaries (about 5 x 4 bytes per element in float32,
#: 2.5 MB: a core's L2 here) stay in cache between the passes instead of streaming through
#: memory each time (measured best of 2^14 ... 2^20 at 20M parameters).
PIECE = 1 << 17


def _pieces(
    ys: list[torch.Tensor], grads: list[torch.Tensor], states: list[dict[str, torch.Tensor]],
) -> list[tuple[list[torch.Tensor], list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
    """The tensors in pieces of about :data:`PIECE` elements (neighbours grouped, contiguous
    large tensors sliced into flat views; every update is elementwise, so this changes no bit)."""
    pieces: list[tuple[list, list, list]] = []
    current: tuple[list, list, list] = ([], [], [])
    size = 0
    for y, g, state in zip(ys, grads, states, strict=True):
        n = y.numel()
        whole = [y, g, *state.values()]
        if n > PIECE and all(isinstance(t, torch.Tensor) and t.numel() == n
                             and t.is_contiguous() for t in whole):
            flat = [t.view(-1) for t in whole]
            keys = list(state)
            for a in range(0, n, PIECE):
                part = [t[a:a + PIECE] for t in flat]
                pieces.append(([part[0]], [part[1]], [dict(zip(keys, part[2:], strict=True))]))
            continue
        if size + n > PIECE and current[0]:
            pieces.append(current)
            current, size = ([], [], []), 0
        current[0].append(y)
        current[1].append(g)
        current[2].append(state)
        size += n
    if current[0]:
        pieces.append(current)
    return pieces


class ScheduleFreeOptimizer(torch.optim.Optimizer):
    """Base class of the Schedule-Free optimizers (the method is in the module docstring).

    A subclass sets :attr:`state_keys` (its per-parameter state besides ``z``),
    defines ``__init__`` with the ``schedulefree`` package's arguments,
    :meth:`momentum_of` (the averaging β of a group), :meth:`scheduled_lr`
    (the learning rate of the coming step) and :meth:`direction` (the base
    direction :math:`d_t` from the gradients).
    """

    #: per-parameter state created (as zeros) next to ``z`` at a parameter's first step
    state_keys: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        defaults = {**defaults, **BOOKKEEPING_KEYS}
        self.check_group(defaults)
        super().__init__(check_params(params), defaults)

    # -- what the algorithms define -------------------------------------------------------
    def check_group(self, group: dict[str, Any]) -> None:
        """Validate one group's hyperparameters (subclasses extend this)."""
        check_learning_rate(group["lr"])
        check_nonnegative("weight_decay", group["weight_decay"])
        check_nonnegative("r", group["r"])
        check_nonnegative("weight_lr_power", group["weight_lr_power"])
        if "warmup_steps" in group:
            check_int("warmup_steps", group["warmup_steps"])

    def momentum_of(self, group: dict[str, Any]) -> float:
        """The interpolation β of ``y = β x + (1 − β) z`` for this group."""
        raise NotImplementedError

    def scheduled_lr(self, group: dict[str, Any], step: int) -> float:
        """The learning rate of step ``step`` (1-based): linear warm-up to ``lr`` by default."""
        warmup = group.get("warmup_steps", 0)
        return group["lr"] * (step / warmup if step <= warmup else 1.0)

    def direction(
        self,
        group: dict[str, Any],
        step: int,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        states: list[dict[str, torch.Tensor]],
    ) -> list[torch.Tensor]:
        """The base direction :math:`d_t` without weight decay; must not write into ``grads``."""
        raise NotImplementedError

    @staticmethod
    def _check_beta(name: str, value: Any) -> float:
        return check_interval(name, value, 0.0, 1.0, low_closed=False, high_closed=False)

    # -- torch.optim API -------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (as torch.optim does) after checking its parameters and hyperparameters."""
        if getattr(self, "param_groups", None):
            params = check_params([param_group])[0]["params"]
            self.check_group({**self.defaults, **param_group})
            param_group = {**param_group, "params": params}
        super().add_param_group(param_group)

    @property
    def training(self) -> bool:
        """True in train mode (the parameters hold ``y``), False in eval mode (``x``)."""
        return all(group["train_mode"] for group in self.param_groups)

    @torch.no_grad()
    def _move(self, to_train: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == to_train:
                continue
            beta = self.momentum_of(group)
            weight = 1.0 - beta if to_train else 1.0 - 1.0 / beta
            pairs = [(p, self.state[p]["z"]) for p in group["params"]
                     if "z" in self.state.get(p, {})]
            if pairs:
                ps, zs = zip(*pairs, strict=True)
                torch._foreach_lerp_([_real(p) for p in ps], [_real(z) for z in zs], weight)
            group["train_mode"] = to_train

    def train(self) -> None:
        """Switch to train mode: the parameters become the gradient point ``y``."""
        self._move(True)

    def eval(self) -> None:
        """Switch to eval mode: the parameters become the average ``x`` (evaluate and save here)."""
        self._move(False)

    @torch.no_grad()
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
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:
        active = [p for p in group["params"] if p.grad is not None]
        for p in active:  # before any bookkeeping moves: a refused step changes nothing
            if p.grad.is_sparse:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients "
                    f"(a parameter of shape {tuple(p.shape)} has one)"
                )
        step = group["k"] + 1
        lr = self.scheduled_lr(group, step)
        group["scheduled_lr"] = lr
        lr_max = group["lr_max"] = max(lr, group["lr_max"])
        weight = step ** group["r"] * lr_max ** group["weight_lr_power"]
        weight_sum = group["weight_sum"] = group["weight_sum"] + weight
        ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
        beta = self.momentum_of(group)

        for p in active:
            state = self.state[p]
            if "z" not in state:
                state["z"] = p.detach().clone(memory_format=torch.preserve_format)
                for key in self.state_keys:
                    state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
        for batch in by_device_and_dtype(active):
            for ys, grads, states in _pieces(
                [_real(p) for p in batch], [_real(p.grad) for p in batch],
                [{k: _real(v) for k, v in self.state[p].items()} for p in batch],
            ):
                self._step_piece(group, step, lr, ckp1, beta, ys, grads, states)
        group["k"] = step

    def _step_piece(self, group: dict[str, Any], step: int, lr: float, ckp1: float, beta: float,
                    ys: list[torch.Tensor], grads: list[torch.Tensor],
                    states: list[dict[str, torch.Tensor]]) -> None:
        """The update of one piece: the direction, then y and z (see the module docstring)."""
        zs = [s["z"] for s in states]
        d = self.direction(group, step, ys, grads, states)
        if group["weight_decay"] != 0:
            if d is grads:
                d = torch._foreach_add(grads, ys, alpha=group["weight_decay"])
            else:
                torch._foreach_add_(d, ys, alpha=group["weight_decay"])
        torch._foreach_lerp_(ys, zs, ckp1)
        torch._foreach_add_(ys, d, alpha=lr * (beta * (1 - ckp1) - 1))
        torch._foreach_sub_(zs, d, alpha=lr)
