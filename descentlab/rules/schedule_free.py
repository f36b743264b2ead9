r"""Schedule-Free SGD, AdamW and RAdam (Defazio et al. 2024) as elementwise rules.

The specifications of :class:`descentlab.SGDScheduleFree`,
:class:`~descentlab.AdamWScheduleFree` and :class:`~descentlab.RAdamScheduleFree`
(the method, modes and checkpoints are in :mod:`descentlab.schedule_free.base`).
Only :math:`z` is stored; the parameter holds :math:`y` while training, and
one step is, per coordinate,

.. math::

    d &= \text{direction}(g) + \lambda y                              \\
    y &\leftarrow \operatorname{lerp}(y, z, c) + \gamma\,(\beta (1 - c) - 1)\, d \\
    z &\leftarrow z - \gamma\, d

with the direction :math:`g` (SGD), :math:`g / (\sqrt{v / (1 - \beta_2^k)} + \epsilon)`
after :math:`v \leftarrow \beta_2 v + (1 - \beta_2) g^2` (AdamW; RAdam once its
rectification has started, the raw :math:`g` before). So the update reads
:math:`y, z, v, g` once and writes :math:`y, z, v` once: under the compiled
engine it is one fused loop.

Everything that depends on the step but not on a coordinate is computed on
the host, once per group and step, by the optimizer shell from the group's
bookkeeping (:data:`BOOKKEEPING`, kept in the group under the ``schedulefree``
package's keys): the scheduled learning rate :math:`\gamma` (linear warm-up, or
RAdam's rectification), the averaging weight :math:`c = w_k / \sum_{s \le k} w_s`
with :math:`w_k = k^r \gamma_{\max}^p`, the group's step :math:`k` (for the bias
correction: a parameter that missed steps is corrected with the group's
count, as in the package) and whether RAdam is rectified. :meth:`ScheduleFreeRule.scalars`
hands them to the update as ``h``, so a compiled kernel receives them as
inputs and never recompiles.

Written with the package's operations where the scalars are Python floats
(``add_(d, alpha=a)``, ``addcmul_``, ``lerp_``), so the eager engines give the
package's bits; with 0-dim tensor scalars (a compiled kernel's trace) the
same operations as products.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from descentlab.rules.base import STRUCTURAL, Flags, HParam, Rule, Scalar
from descentlab.validation import (
    check_betas,
    check_int,
    check_interval,
    check_nonnegative,
)

__all__ = [
    "BOOKKEEPING",
    "ScheduleFreeRule",
    "SGDScheduleFreeRule",
    "AdamWScheduleFreeRule",
    "RAdamScheduleFreeRule",
]

#: The per-group bookkeeping the ``schedulefree`` package keeps in its groups, at the start.
BOOKKEEPING: dict[str, Any] = {
    "k": 0,
    "train_mode": False,
    "weight_sum": 0.0,
    "lr_max": -1.0,
    "scheduled_lr": 0.0,
}


def _check_open_unit(name: str, value: Any) -> float:
    """β in (0, 1): ``eval()`` divides by it, and β = 1 never moves ``y`` toward ``z``."""
    return check_interval(name, value, 0.0, 1.0, low_closed=False, high_closed=False)


def _check_betas(name: str, value: Any) -> tuple[float, ...]:
    betas = check_betas(value, name)
    _check_open_unit(f"{name}[0]", value[0])
    return betas


def _add_scaled(t: Tensor, other: Tensor, a: Scalar, in_place: bool = True) -> Tensor:
    """``t + a·other`` (in place or new): torch's ``alpha`` form for floats, a product otherwise."""
    if isinstance(a, Tensor):
        return t.add_(other * a) if in_place else t + other * a
    return t.add_(other, alpha=a) if in_place else t.add(other, alpha=a)


WEIGHT_DECAY = HParam("weight_decay", 0, check=check_nonnegative, doc="weight decay λ, at y")
WARMUP = HParam("warmup_steps", 0, check=check_int, doc="linear warm-up steps")
#: the averaging weights' powers: w_k = k ** r · lr_max ** weight_lr_power
AVERAGING = (
    HParam("r", 0.0, check=check_nonnegative, doc="polynomial power r of the average's weights"),
    HParam("weight_lr_power", 2.0, check=check_nonnegative,
           doc="the average's weights are lr_max ** weight_lr_power"),
)
FOREACH = HParam("foreach", None, STRUCTURAL,
                 doc="accepted for compatibility with the schedulefree package; ignored")


class ScheduleFreeRule(Rule):
    """The Schedule-Free step shared by SGD, AdamW and RAdam (see the module docstring).

    Subclasses set :attr:`momentum_key` and implement :meth:`direction`;
    :meth:`scheduled_lr` defaults to the linear warm-up.
    """

    #: the group key of the interpolation β (``momentum``, or ``betas`` whose first entry it is)
    momentum_key = "momentum"
    #: the state entries besides ``z`` (zeros at the first step)
    moment_keys: tuple[str, ...] = ()

    # -- host side: read by the optimizer shell ---------------------------------------------
    def group_state(self, group: Mapping[str, Any]) -> dict[str, Any]:
        """The bookkeeping a group keeps between steps, at the start (:data:`BOOKKEEPING`)."""
        return dict(BOOKKEEPING)

    def momentum(self, group: Mapping[str, Any]) -> float:
        """β of ``y = β x + (1 − β) z`` for this group."""
        value = group[self.momentum_key]
        return float(value[0] if isinstance(value, (tuple, list)) else value)

    def scheduled_lr(self, group: Mapping[str, Any], step: int) -> float:
        """The learning rate of group step ``step`` (1-based): linear warm-up to ``lr``."""
        warmup = group.get("warmup_steps", 0)
        return group["lr"] * (step / warmup if step <= warmup else 1.0)

    @staticmethod
    def averaging_weight(group: Mapping[str, Any]) -> float:
        """:math:`w_k = k^r \\gamma_{\\max}^p` of the group's current step ``k``."""
        return group["k"] ** group["r"] * group["lr_max"] ** group["weight_lr_power"]

    def check(self, group: Mapping[str, Any]) -> None:
        """The declared checks; a group naming this rule must be a Schedule-Free optimizer's."""
        super().check(group)
        if "rule" in group and "k" not in group:
            raise ValueError(
                f"rule {group['rule']!r} needs a Schedule-Free optimizer (its bookkeeping and "
                "train()/eval()): use descentlab.SGDScheduleFree, AdamWScheduleFree or "
                "RAdamScheduleFree for these parameters, not a group of another optimizer"
            )

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"weight_decay": float(group["weight_decay"]) != 0.0}

    def scalars(self, group: Mapping[str, Any]) -> dict[str, float]:
        """The step's host-side values (module docstring) and the rule's hyperparameters.

        Read after the shell has advanced the group's bookkeeping for the step.
        """
        group = {**BOOKKEEPING, **group}
        weight_sum = group["weight_sum"]
        ckp1 = self.averaging_weight(group) / weight_sum if weight_sum != 0 else 0.0
        return {"lr": float(group["scheduled_lr"]), "ckp1": float(ckp1),
                "beta": self.momentum(group), "weight_decay": float(group["weight_decay"]),
                "k": float(group["k"])}

    # -- the elementwise update -------------------------------------------------------------
    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        state = {"z": param.clone(memory_format=torch.preserve_format)}
        for key in self.moment_keys:
            state[key] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def direction(
        self, grad: Tensor, state: dict[str, Tensor], h: Mapping[str, Scalar]
    ) -> Tensor:
        """The base direction without weight decay (may be ``grad`` itself; never written into)."""
        raise NotImplementedError

    def update(self, param, grad, state, h, step, flags) -> None:
        y, z = param, state["z"]
        d = self.direction(grad, state, h)
        if flags["weight_decay"]:
            d = _add_scaled(d, y, h["weight_decay"], in_place=d is not grad)
        lr, ckp1 = h["lr"], h["ckp1"]
        y.lerp_(z, ckp1)
        _add_scaled(y, d, lr * (h["beta"] * (1 - ckp1) - 1))
        _add_scaled(z, d, -lr)


class SGDScheduleFreeRule(ScheduleFreeRule):
    """Schedule-Free SGD: the direction is the gradient."""

    name = "sgd_schedulefree"
    hparams = (
        HParam("lr", 1.0, check=check_nonnegative, doc="learning rate γ"),
        HParam("momentum", 0.9, check=_check_open_unit, doc="interpolation β in (0, 1)"),
        WEIGHT_DECAY, WARMUP, *AVERAGING, FOREACH,
    )

    def direction(self, grad, state, h):
        return grad


def _second_moment(grad: Tensor, state: dict[str, Tensor], h: Mapping[str, Scalar]) -> Tensor:
    """``v ← β₂ v + (1 − β₂) g²`` in place."""
    v = state["exp_avg_sq"].mul_(h["beta2"])
    if isinstance(h["beta2"], Tensor):
        return v.add_(grad * grad * (1 - h["beta2"]))
    return v.addcmul_(grad, grad, value=1 - h["beta2"])


def _normalised(grad: Tensor, v: Tensor, h: Mapping[str, Scalar]) -> Tensor:
    """``g / (sqrt(v / (1 − β₂ᵏ)) + ε)`` (a new tensor)."""
    denom = v.div(1 - h["beta2"] ** h["k"]).sqrt_().add_(h["eps"])
    return grad.div(denom)


ADAM_HPARAMS = (
    HParam("lr", 0.0025, check=check_nonnegative, doc="learning rate γ"),
    HParam("betas", (0.9, 0.999), check=_check_betas, split=("beta1", "beta2"),
           doc="interpolation β₁ in (0, 1) and second-moment decay β₂"),
    HParam("eps", 1e-8, check=check_nonnegative, doc="ε added to the denominator"),
)


class AdamWScheduleFreeRule(ScheduleFreeRule):
    """Schedule-Free AdamW: the direction is the bias-corrected Adam-normalised gradient."""

    name = "adamw_schedulefree"
    momentum_key = "betas"
    moment_keys = ("exp_avg_sq",)
    nonnegative_state = ("exp_avg_sq",)
    hparams = (*ADAM_HPARAMS, WEIGHT_DECAY, WARMUP, *AVERAGING, FOREACH)

    def scalars(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {**super().scalars(group), "beta2": float(group["betas"][1]),
                "eps": float(group["eps"])}

    def direction(self, grad, state, h):
        return _normalised(grad, _second_moment(grad, state, h), h)


class RAdamScheduleFreeRule(AdamWScheduleFreeRule):
    """Schedule-Free RAdam: AdamW's direction once rectified (ρₖ > 4), the gradient before."""

    name = "radam_schedulefree"
    hparams = (*ADAM_HPARAMS, WEIGHT_DECAY, *AVERAGING, FOREACH,
               HParam("silent_sgd_phase", True, STRUCTURAL,
                      doc="no parameter moves before the rectification starts"))

    @staticmethod
    def rho(group: Mapping[str, Any], step: int) -> tuple[float, float]:
        """(ρ∞, ρₖ) of group step ``step``."""
        beta2 = group["betas"][1]
        rho_inf = 2 / (1 - beta2) - 1
        beta2_t = beta2**step
        return rho_inf, rho_inf - 2 * step * beta2_t / (1 - beta2_t)

    def scheduled_lr(self, group: Mapping[str, Any], step: int) -> float:
        """``lr`` times the rectification; 0 (silent) or 1 (an SGD phase) before it starts."""
        rho_inf, rho_t = self.rho(group, step)
        if rho_t > 4.0:
            rect = (
                (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            ) ** 0.5
        else:
            rect = float(not group["silent_sgd_phase"])
        return group["lr"] * rect

    def scalars(self, group: Mapping[str, Any]) -> dict[str, float]:
        h = super().scalars(group)
        step = max(int(group.get("k", 0)), 1)
        h["rectified"] = float(self.rho(group, step)[1] > 4.0)
        return h

    def direction(self, grad, state, h):
        v = _second_moment(grad, state, h)
        rectified = h["rectified"]
        if isinstance(rectified, Tensor):
            return torch.where(rectified > 0.5, _normalised(grad, v, h), grad)
        return _normalised(grad, v, h) if rectified else grad
