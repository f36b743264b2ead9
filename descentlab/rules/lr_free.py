"""Learning-rate-free rules: D-Adaptation (Adam and SGD forms) and Prodigy.

Each estimates D, the distance from the start to a solution, from global
sums over every parameter, and steps with a learning rate proportional to
it. They are :class:`~descentlab.rules.reduction.GlobalRule` s: one step of
the whole optimizer, two passes over its pieces around the reductions. The
optimizer classes of the same names (:mod:`descentlab.optim.lr_free`) give
the equations; they follow the reference packages ``dadaptation`` 3.2 and
``prodigyopt`` 1.1.2, including which values come from the first group
(betas, bias correction, decoupling, growth rate: the estimate is one for
the whole optimizer) and which from each group (weight decay, ε, d0).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from descentlab.rules.base import STRUCTURAL, Flags, HParam, Scalar
from descentlab.rules.reduction import GlobalRule, Piece, dot, global_sums
from descentlab.validation import (
    check_decay_rates,
    check_interval,
    check_nonnegative,
    check_positive,
)

__all__ = ["ProdigyRule", "DAdaptAdamRule", "DAdaptSGDRule", "all_reduce_sums"]

logger = logging.getLogger("descentlab.lr_free")


def _check_growth_rate(name: str, value: Any) -> float:
    """growth_rate > 0 (``inf``, the default, means unrestricted)."""
    return check_interval(name, value, 0.0, math.inf, low_closed=False)


def _check_beta3(name: str, value: Any) -> Any:
    if value is None:
        return value
    return check_interval(name, value, 0.0, 1.0, high_closed=False)


def _check_momentum(name: str, value: Any) -> float:
    return check_interval(name, value, 0.0, 1.0, high_closed=False)


def _check_slice_p(name: str, value: Any) -> int:
    if value != 1 or isinstance(value, bool):
        raise ValueError(
            f"{name}={value!r} is not supported: descentlab's Prodigy computes its statistics "
            "on every entry (slice_p=1, the exact method; larger values approximate it)"
        )
    return 1


LR = HParam("lr", 1.0, check=check_nonnegative, doc="multiplier of the estimated step size")
BETAS = HParam("betas", (0.9, 0.999), check=check_decay_rates, doc="decay rates (β₁, β₂)",
               split=("beta1", "beta2"))
EPS = HParam("eps", 1e-8, check=check_positive, doc="ε added to the denominator")
WEIGHT_DECAY = HParam("weight_decay", 0.0, check=check_nonnegative, doc="weight decay λ")
LOG_EVERY = HParam("log_every", 0, STRUCTURAL, doc="log the estimate every k steps (0: never)")
BIAS_CORRECTION = HParam("use_bias_correction", False, STRUCTURAL, doc="Adam's bias correction")
D0 = HParam("d0", 1e-6, check=check_positive, doc="initial estimate of D")
GROWTH_RATE = HParam("growth_rate", math.inf, check=_check_growth_rate,
                     doc="largest factor by which d grows per step")
FSDP = HParam("fsdp_in_use", False, STRUCTURAL,
              doc="sum the reductions over torch.distributed's processes (sharded parameters)")


def all_reduce_sums(values: list[float], on: bool) -> list[float]:
    """``values`` summed over the processes of torch.distributed's default group (if ``on``)."""
    if not (on and torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    total = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(total)
    return total.tolist()


def _zeros(p: Tensor) -> Tensor:
    return torch.zeros_like(p, memory_format=torch.preserve_format)


def _lr_of(groups: list[dict[str, Any]]) -> float:
    """The one learning rate of the optimizer: groups may only use it or 0 (as the references)."""
    lr = max(g["lr"] for g in groups)
    for i, g in enumerate(groups):
        if g["lr"] not in (lr, 0.0):
            raise RuntimeError(
                f"param group {i} has lr={g['lr']!r}: the groups of a D-Adaptation or Prodigy "
                f"optimizer share one learning rate ({lr!r}) or use 0 (frozen); scale a layer's "
                "step with 'layer_scale' (DAdaptAdam) instead"
            )
    return lr


def _coupled(piece: Piece, decay: float) -> Tensor:
    """The gradient with coupled weight decay g + λθ (the gradient itself when λ = 0)."""
    return piece.grad + decay * piece.param if decay != 0 else piece.grad


def _adam_bias(group: Mapping[str, Any], beta1: float, beta2: float) -> float:
    """√(1 − β₂ᵏ⁺¹)/(1 − β₁ᵏ⁺¹) with Adam's bias correction on, else 1."""
    if not group["use_bias_correction"]:
        return 1.0
    k = group["k"]
    return (1 - beta2 ** (k + 1)) ** 0.5 / (1 - beta1 ** (k + 1))


class ProdigyRule(GlobalRule):
    """Prodigy: D-Adaptation's Adam with the estimate d weighted into the moments."""

    name = "prodigy"
    hparams = (
        LR, BETAS,
        HParam("beta3", None, STRUCTURAL, check=_check_beta3,
               doc="decay of the step-size statistics (None: √β₂)"),
        EPS, WEIGHT_DECAY,
        HParam("decouple", True, STRUCTURAL, doc="decoupled (AdamW) weight decay"),
        BIAS_CORRECTION,
        HParam("safeguard_warmup", False, STRUCTURAL, doc="leave lr out of the statistics s"),
        D0,
        HParam("d_coef", 1.0, check=check_nonnegative, doc="factor of the estimate d"),
        GROWTH_RATE, FSDP,
        HParam("slice_p", 1, STRUCTURAL, check=_check_slice_p, doc="statistics on every entry"),
    )

    def group_state(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"d": group["d0"], "d_max": group["d0"], "d_numerator": 0.0, "k": 0}

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        state = {"s": _zeros(param), "p0": param.detach().clone()}
        if h["beta1"] > 0:
            state["exp_avg"] = _zeros(param)
        state["exp_avg_sq"] = _zeros(param)
        return state

    def step_all(self, groups: list[dict[str, Any]], pieces: list[list[Piece]]) -> None:
        first = groups[0]
        lr = _lr_of(groups)
        beta1, beta2 = first["betas"]
        beta3 = math.sqrt(beta2) if first["beta3"] is None else first["beta3"]
        d, d_max, decouple = first["d"], first["d_max"], first["decouple"]
        dlr = d * lr * _adam_bias(first, beta1, beta2)
        numerators: list[Tensor] = []
        l1: list[Tensor] = []
        grads: list[list[Tensor]] = []
        for group, run in zip(groups, pieces, strict=True):
            decay = 0.0 if decouple else group["weight_decay"]
            grads.append([_coupled(piece, decay) for piece in run])
            if group["lr"] == 0:
                continue  # frozen: its state stays as it is
            ratio = d / group["d0"]  # d/d₀ keeps the statistics away from tiny numbers
            s_rate = ratio * (d if group["safeguard_warmup"] else dlr)
            for piece, g in zip(run, grads[-1], strict=True):
                st = piece.state
                numerators.append(dot(g, st["p0"] - piece.param) * (ratio * dlr))
                if beta1 > 0:
                    st["exp_avg"].mul_(beta1).add_(g, alpha=d * (1 - beta1))
                st["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=d * d * (1 - beta2))
                st["s"].mul_(beta3).add_(g, alpha=s_rate)
                l1.append(st["s"].abs().sum())
        numerator, denominator = global_sums(numerators, l1)
        if denominator == 0 and not first["fsdp_in_use"]:
            return  # no gradient information yet (all gradients zero)
        numerator, denominator = all_reduce_sums([numerator, denominator], first["fsdp_in_use"])
        numerator += beta3 * first["d_numerator"]
        d_hat = first["d_coef"] * numerator / denominator
        if d == groups[-1]["d0"]:
            d = max(d, d_hat)
        d_max = max(d_max, d_hat)
        d = min(d_max, d * first["growth_rate"])
        for group, run, group_grads in zip(groups, pieces, grads, strict=True):
            group.update(d_numerator=numerator, d_denom=denominator, d=d, d_max=d_max, d_hat=d_hat)
            for piece, g in zip(run, group_grads, strict=True):
                denom = piece.state["exp_avg_sq"].sqrt().add_(d * group["eps"])
                if decouple and group["weight_decay"] != 0:
                    piece.param.add_(piece.param, alpha=-group["weight_decay"] * dlr)
                if beta1 > 0:
                    piece.param.addcdiv_(piece.state["exp_avg"], denom, value=-dlr)
                else:
                    piece.param.addcdiv_(g, denom, value=-dlr * d)
            group["k"] += 1


class DAdaptAdamRule(GlobalRule):
    """D-Adaptation's Adam form (Defazio & Mishchenko 2023, Algorithm 4 with ℓ₁ norm)."""

    name = "dadapt_adam"
    hparams = (
        LR, BETAS, EPS, WEIGHT_DECAY, LOG_EVERY,
        HParam("decouple", False, STRUCTURAL, doc="decoupled (AdamW) weight decay"),
        BIAS_CORRECTION, D0, GROWTH_RATE, FSDP,
    )

    def group_state(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"d": group["d0"], "k": 0, "layer_scale": 1.0, "numerator_weighted": 0.0}

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        return {"s": _zeros(param), "exp_avg": _zeros(param), "exp_avg_sq": _zeros(param)}

    def step_all(self, groups: list[dict[str, Any]], pieces: list[list[Piece]]) -> None:
        first = groups[0]
        lr = _lr_of(groups)
        beta1, beta2 = first["betas"]
        d, k, decouple = first["d"], first["k"], first["decouple"]
        dlr = d * lr * _adam_bias(first, beta1, beta2)
        sqrt_beta2 = beta2**0.5
        numerators: list[Tensor] = []
        l1: list[Tensor] = []
        for group, run in zip(groups, pieces, strict=True):
            if group["lr"] == 0:
                continue
            decay, r = (0.0 if decouple else group["weight_decay"]), group["layer_scale"]
            for piece in run:
                g, st = _coupled(piece, decay), piece.state
                denom = st["exp_avg_sq"].sqrt().add_(group["eps"])
                numerators.append(dot(g, st["s"] / denom) * (r * dlr))
                st["exp_avg"].mul_(beta1).add_(g, alpha=r * dlr * (1 - beta1))
                st["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                st["s"].mul_(sqrt_beta2).add_(g, alpha=dlr * (1 - sqrt_beta2))
                l1.append(st["s"].abs().sum() * r)
        numerator, sk_l1 = global_sums(numerators, l1)
        weighted = sqrt_beta2 * first["numerator_weighted"] + (1 - sqrt_beta2) * numerator
        if sk_l1 == 0:
            return  # no gradient information yet
        total_weighted, total_l1 = all_reduce_sums([weighted, sk_l1], first["fsdp_in_use"])
        d_hat = total_weighted / ((1 - sqrt_beta2) * total_l1)
        d = max(d, min(d_hat, d * first["growth_rate"]))
        if first["log_every"] > 0 and k % first["log_every"] == 0:
            logger.info("lr: %s dlr: %s d_hat: %s d: %s sk_l1: %.1e numerator_weighted: %.1e",
                        lr, dlr, d_hat, d, total_l1, total_weighted)
        for group, run in zip(groups, pieces, strict=True):
            group.update(numerator_weighted=weighted, d=d)
            for piece in run:
                denom = piece.state["exp_avg_sq"].sqrt().add_(group["eps"])
                if decouple and group["weight_decay"] != 0:
                    piece.param.add_(piece.param, alpha=-group["weight_decay"] * dlr)
                piece.param.addcdiv_(piece.state["exp_avg"], denom, value=-1)
            group["k"] += 1


class DAdaptSGDRule(GlobalRule):
    """D-Adaptation's SGD form (dual averaging with the estimate d, Defazio & Mishchenko 2023)."""

    name = "dadapt_sgd"
    hparams = (
        LR,
        HParam("momentum", 0.0, check=_check_momentum, doc="μ of θ ← μθ + (1 − μ)z"),
        WEIGHT_DECAY, LOG_EVERY, D0, GROWTH_RATE, FSDP,
    )

    def group_state(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"k": 0, "numerator_weighted": 0.0, "d": group["d0"]}

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        start = param.detach()
        return {"z": start.clone(), "s": _zeros(param), "x0": start.clone()}

    def step_all(self, groups: list[dict[str, Any]], pieces: list[list[Piece]]) -> None:
        first = groups[0]
        lr = _lr_of(groups)
        decay, k, d = first["weight_decay"], first["k"], first["d"]
        ck = 1 - first["momentum"]  # the weight of z in the average (written as the reference)
        fsdp = first["fsdp_in_use"]
        if k == 0:  # the first gradient's norm (without weight decay) normalises every step
            squares = [dot(p.grad, p.grad) for g, run in zip(groups, pieces, strict=True)
                       if g["lr"] > 0 for p in run]
            g0_norm = math.sqrt(all_reduce_sums(global_sums(squares), fsdp)[0])
            if g0_norm == 0:
                return  # a zero first gradient says nothing about the scale: wait for another
        else:
            g0_norm = first["g0_norm"]
        dlr = d * lr / g0_norm
        numerators: list[Tensor] = []
        squares = []
        for group, run in zip(groups, pieces, strict=True):
            if group["lr"] == 0:
                continue
            for piece in run:
                g, s = _coupled(piece, decay), piece.state["s"]
                numerators.append(dot(g, s) * dlr)
                s.add_(g, alpha=dlr)
                squares.append(dot(s, s))
        numerator, sk_sq = global_sums(numerators, squares)
        weighted = first["numerator_weighted"] + numerator
        total_sq, total_weighted = all_reduce_sums([sk_sq, weighted], fsdp)
        if total_sq == 0:
            return  # no gradient information yet
        d_hat = 2 * total_weighted / math.sqrt(total_sq)
        d = max(d, min(d_hat, d * first["growth_rate"]))
        if first["log_every"] > 0 and k % first["log_every"] == 0:
            logger.info("k: %s dlr: %s d_hat: %s d: %s sk_norm: %s numerator_weighted: %s "
                        "g0_norm: %s", k, dlr, d_hat, d, math.sqrt(total_sq), total_weighted,
                        g0_norm)
        for group, run in zip(groups, pieces, strict=True):
            group.update(numerator_weighted=weighted, d=d, g0_norm=g0_norm, k=k + 1)
            for piece in run:
                z = piece.state["z"]
                torch.sub(piece.state["x0"], piece.state["s"], out=z)
                piece.param.mul_(1 - ck).add_(z, alpha=ck)
