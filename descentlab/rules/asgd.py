"""ASGD: SGD with a decaying step size and a running (Polyak–Ruppert) average of the iterates.

The specification of :class:`descentlab.ASGD` (whose docstring gives the
equations and the reference). The step size η_t and the averaging weight μ_t
are per-parameter scalars that depend only on the step count and the
hyperparameters; each coordinate of θ and of the average ā depends only on
its own coordinate and those two scalars. So the rule is elementwise, with
η and μ as 0-dim *scalar state* (like NAdam's μ-product): engines keep one
copy per run of parameters with the same step count and hand it to the
update, which reads the current values and writes the next ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from descentlab.rules.base import (
    Flags,
    HParam,
    Rule,
    Scalar,
    apply_weight_decay,
    weight_decay_mode,
    where,
)
from descentlab.validation import check_nonnegative, interval

__all__ = ["ASGDRule"]

_REAL = interval(-math.inf, math.inf)


class ASGDRule(Rule):
    """g ← g + λ_wd θ;  θ ← θ(1 − λη) − η g;  ā ← θ if μ = 1 else ā + μ(θ − ā); then
    η ← lr / (1 + λ·lr·t)^α and μ ← 1 / max(1, t − t₀) for the next step.

    η starts at the learning rate of the step that creates the state and μ at
    1, as in torch.optim (which keeps both per parameter too); they are kept in
    float64.
    """

    name = "asgd"
    hparams = (
        HParam("lr", 1e-2, check=check_nonnegative, doc="learning rate η₀"),
        HParam("lambd", 1e-4, check=check_nonnegative, doc="decay term λ"),
        HParam("alpha", 0.75, check=_REAL, doc="power α of the step-size decay"),
        HParam("t0", 1e6, check=_REAL, doc="step t₀ at which averaging starts"),
        HParam("weight_decay", 0.0, check=check_nonnegative, doc="weight decay (coupled L2)"),
    )
    scalar_state = ("eta", "mu")

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"weight_decay": weight_decay_mode(group)}

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        scalar = {"dtype": torch.float64, "device": param.device}
        return {
            "eta": torch.full((), float(h["lr"]), **scalar),
            "mu": torch.ones((), **scalar),
            "ax": torch.zeros_like(param, memory_format=torch.preserve_format),
        }

    def update(self, param, grad, state, h, step, flags) -> None:
        g = apply_weight_decay(param, grad, h, flags["weight_decay"])
        eta, mu, ax = state["eta"], state["mu"], state["ax"]
        lr, lambd = h["lr"], h["lambd"]
        param.mul_(1 - lambd * eta).sub_(g * eta)
        ax.copy_(torch.where(mu == 1, param, ax + (param - ax) * mu))
        eta.fill_(lr / (1 + lambd * lr * step) ** h["alpha"])
        mu.fill_(1 / where(step - h["t0"] > 1, step - h["t0"], 1.0))
