"""The conformance registry of optimizers whose reference is a package other than torch.optim.

Each entry names a descentlab optimizer, the reference class it must match
(float64, 100 steps, relative tolerance ``tolerance``), optionally a second
class it must match bit for bit (the same algorithm written the same way),
settings that together cover every option, and how a training run starts
(``prepare``: Schedule-Free needs ``optimizer.train()``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lion_pytorch
import pytorch_optimizer
import schedulefree
import torch

import descentlab


def _train_mode(opt: torch.optim.Optimizer) -> None:
    opt.train()


@dataclass(frozen=True)
class PackageInfo:
    """How to test one optimizer against its reference package."""

    name: str
    ours: type
    reference: type
    settings: list[dict[str, Any]]
    #: largest relative difference allowed against ``reference`` after 100 float64 steps
    tolerance: float = 1e-10
    #: a class of the reference package that ours must match exactly (same arithmetic)
    bitwise: type | None = None
    #: called on every new optimizer before its first step
    prepare: Callable[[torch.optim.Optimizer], None] = field(default=lambda opt: None)
    #: back-propagate with create_graph=True (Hessian-vector products by double backward)
    create_graph: bool = False

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()`` as this optimizer needs it."""
        loss.backward(create_graph=self.create_graph)


PACKAGE_INFOS = [
    PackageInfo(
        "sgd_schedulefree",
        descentlab.SGDScheduleFree,
        schedulefree.SGDScheduleFreeReference,
        [
            {"lr": 0.1},
            {"lr": 0.1, "momentum": 0.8, "weight_decay": 0.1, "warmup_steps": 20},
            {"lr": 0.05, "warmup_steps": 10, "r": 1.0, "weight_lr_power": 1.0},
        ],
        bitwise=schedulefree.SGDScheduleFree,
        prepare=_train_mode,
    ),
    PackageInfo(
        "adamw_schedulefree",
        descentlab.AdamWScheduleFree,
        schedulefree.AdamWScheduleFreeReference,
        [
            {"lr": 0.01},
            {"lr": 0.01, "weight_decay": 0.1, "warmup_steps": 20},
            {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "warmup_steps": 5, "r": 0.5,
             "weight_lr_power": 0.0, "weight_decay": 0.01},
        ],
        bitwise=schedulefree.AdamWScheduleFree,
        prepare=_train_mode,
    ),
    # schedulefree ships no RAdam reference class: the AdamW reference's equations with the
    # rectified learning rate are checked by hand in tests/schedule_free
    PackageInfo(
        "radam_schedulefree",
        descentlab.RAdamScheduleFree,
        schedulefree.RAdamScheduleFree,
        [
            {"lr": 0.01},
            {"lr": 0.01, "weight_decay": 0.1, "silent_sgd_phase": False},
            {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "r": 0.5, "weight_lr_power": 1.0},
        ],
        bitwise=schedulefree.RAdamScheduleFree,
        prepare=_train_mode,
    ),
]

PACKAGE_INFOS += [
    # the probes come from torch's global generator in pytorch_optimizer's order: seeded the
    # same, both draw the same probes
    PackageInfo(
        "sophiah",
        descentlab.SophiaH,
        pytorch_optimizer.SophiaH,
        [
            {"lr": 0.05},
            {"lr": 0.05, "update_period": 3, "weight_decay": 0.1, "num_samples": 2},
            {"lr": 0.02, "betas": (0.9, 0.95), "p": 0.05, "update_period": 1,
             "hessian_distribution": "rademacher", "weight_decay": 0.01,
             "weight_decouple": False, "maximize": True},
            {"lr": 0.05, "weight_decay": 0.1, "fixed_decay": True, "eps": 1e-6},
        ],
        tolerance=0.0,
        bitwise=pytorch_optimizer.SophiaH,
        create_graph=True,
    ),
    PackageInfo(
        "adahessian",
        descentlab.AdaHessian,
        pytorch_optimizer.AdaHessian,
        [
            {"lr": 0.05},
            {"lr": 0.05, "update_period": 2, "weight_decay": 0.1, "hessian_power": 0.5},
            {"lr": 0.02, "betas": (0.8, 0.99), "num_samples": 2,
             "hessian_distribution": "gaussian", "weight_decay": 0.01,
             "weight_decouple": False, "maximize": True},
            {"lr": 0.05, "weight_decay": 0.1, "fixed_decay": True, "eps": 1e-8},
        ],
        tolerance=0.0,
        bitwise=pytorch_optimizer.AdaHessian,
        create_graph=True,
    ),
]

# The reference keeps maximize, and Lion's decoupled_weight_decay, LAMB's degenerated_to_sgd,
# n_sma_threshold and pre_norm, for the whole optimizer (ours: per group): the first setting
# with the most keys (``richest``, also used for mixed groups) leaves them out; maximize is
# tested under every engine in tests/optim/test_trust_ratio.py.
PACKAGE_INFOS += [
    PackageInfo(
        "lion",
        descentlab.Lion,
        lion_pytorch.Lion,
        [
            {"lr": 0.01, "betas": (0.8, 0.95), "weight_decay": 0.5},
            {"lr": 0.01},
            {"lr": 0.02, "weight_decay": 0.1, "decoupled_weight_decay": True},
        ],
    ),
    PackageInfo(
        "lars",
        descentlab.LARS,
        pytorch_optimizer.LARS,
        [
            {"lr": 0.5, "weight_decay": 0.1, "trust_coefficient": 0.02, "nesterov": True},
            {"lr": 0.1},
            {"lr": 0.5, "momentum": 0.0, "weight_decay": 0.1, "trust_coefficient": 0.02},
            {"lr": 0.5, "momentum": 0.8, "dampening": 0.3},
        ],
    ),
    PackageInfo(
        "lamb",
        descentlab.LAMB,
        pytorch_optimizer.Lamb,
        [
            {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1, "weight_decouple": False,
             "grad_averaging": False, "eps": 1e-8},
            {"lr": 0.01},
            {"lr": 0.01, "weight_decay": 0.1, "fixed_decay": True, "adam": True},
            {"lr": 0.01, "rectify": True, "weight_decay": 0.05},
            {"lr": 0.01, "rectify": True, "degenerated_to_sgd": True, "n_sma_threshold": 4},
            {"lr": 0.01, "pre_norm": True, "max_grad_norm": 0.05},
        ],
    ),
]

PACKAGE_INFOS += [
    # pytorch_optimizer's per-tensor classes (foreach=False) compute in another order
    PackageInfo(
        "adopt",
        descentlab.ADOPT,
        pytorch_optimizer.ADOPT,
        [
            {"lr": 0.01},
            {"lr": 0.01, "cautious": True, "weight_decay": 0.1},
            {"lr": 0.01, "clip_lambda": None, "weight_decay": 0.1, "weight_decouple": True,
             "maximize": True},
            {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-8, "weight_decay": 0.1,
             "weight_decouple": True, "fixed_decay": True, "cautious": True},
        ],
    ),
    PackageInfo(
        "ademamix",
        descentlab.AdEMAMix,
        pytorch_optimizer.AdEMAMix,
        [
            {"lr": 0.01},
            {"lr": 0.01, "cautious": True, "t_alpha_beta3": 50, "weight_decay": 0.1,
             "weight_decouple": True, "fixed_decay": True},
            {"lr": 0.01, "betas": (0.8, 0.99, 0.999), "alpha": 2.0, "weight_decay": 0.1,
             "maximize": True},
            {"lr": 0.005, "t_alpha_beta3": 20, "eps": 1e-6, "weight_decay": 0.01,
             "cautious": True},
        ],
    ),
    # a tensor rule: the same operations as pytorch_optimizer's (bitwise equal in our runs);
    # its state layout differs (per-dimension keys instead of lists), so checkpoints do not move
    PackageInfo(
        "soap",
        descentlab.SOAP,
        pytorch_optimizer.SOAP,
        [
            {"lr": 0.01},
            {"lr": 0.01, "precondition_frequency": 3, "weight_decay": 0.1, "maximize": True},
            {"lr": 0.005, "betas": (0.9, 0.99), "shampoo_beta": 0.8, "precondition_1d": True,
             "precondition_frequency": 2, "eps": 1e-6},
            {"lr": 0.01, "max_precondition_dim": 4, "correct_bias": False,
             "normalize_gradient": True, "weight_decay": 0.0},
        ],
        tolerance=1e-13,
    ),
]

# Shampoo: graft and preconditioner codes as the reference's IntEnum values (ours also takes
# names). Its block, schedule and root options are per optimizer there (per group here), so
# the first and the richest setting keep to per-group keys (tests/optim/test_shampoo.py
# covers the rest on more shapes); bitwise equal in our runs
PACKAGE_INFOS += [
    PackageInfo(
        "shampoo",
        descentlab.Shampoo,
        pytorch_optimizer.ScalableShampoo,
        [
            {"lr": 0.01},
            {"lr": 0.01, "betas": (0.8, 0.95), "weight_decay": 0.1, "nesterov": False,
             "decoupled_learning_rate": False, "moving_average_for_momentum": True,
             "decoupled_weight_decay": False},
            {"lr": 0.01, "shape_interpretation": False, "start_preconditioning_step": 5,
             "preconditioning_compute_steps": 4, "graft_type": 2, "weight_decay": 0.1,
             "maximize": True},
            {"lr": 0.01, "block_size": 2, "start_preconditioning_step": 3,
             "preconditioning_compute_steps": 2, "graft_type": 3,
             "decoupled_weight_decay": True, "weight_decay": 0.1},
            {"lr": 0.01, "shape_interpretation": False, "start_preconditioning_step": 2,
             "preconditioning_compute_steps": 3, "use_svd": True, "graft_type": 4,
             "nesterov": False},
            {"lr": 0.005, "shape_interpretation": False, "start_preconditioning_step": 1,
             "preconditioning_compute_steps": 2, "statistics_compute_steps": 2,
             "pre_conditioner_type": 1, "inverse_exponent_override": 2},
            {"lr": 0.01, "shape_interpretation": False, "graft_type": 0,
             "pre_conditioner_type": 2, "start_preconditioning_step": 3,
             "preconditioning_compute_steps": 3},
        ],
        tolerance=1e-13,
    ),
]

# MARS: maximize is per optimizer in the reference, so the richest setting leaves it out; the
# group key lr_1d is ignored by both (the rate is lr · lr_1d_factor, fixed at construction).
# Bitwise equal in our runs, with foreach on and off (tests/optim/test_mars.py)
PACKAGE_INFOS += [
    PackageInfo(
        "mars",
        descentlab.MARS,
        pytorch_optimizer.MARS,
        [
            {"lr": 0.01},
            {"lr": 0.01, "betas": (0.9, 0.95), "gamma": 0.05, "weight_decay": 0.1,
             "weight_decay_1d": 0.05, "cautious": True, "ams_bound": True, "lr_1d": 0.02},
            {"lr": 0.01, "mars_type": "lion", "weight_decay": 0.1, "weight_decouple": False,
             "maximize": True},
            {"lr": 0.01, "optimize_1d": True, "fixed_decay": True, "weight_decay": 0.01,
             "betas_1d": (0.8, 0.9), "eps": 1e-6},
            {"lr": 0.01, "mars_type": "shampoo", "cautious": True, "optimize_1d": True},
        ],
        tolerance=1e-13,
    ),
]

# the 2018 form: preconditioning_compute_steps and maximize are per optimizer in the
# reference, so the first and the richest setting leave them out; bitwise equal in our runs
PACKAGE_INFOS += [
    PackageInfo(
        "plain_shampoo",
        descentlab.PlainShampoo,
        pytorch_optimizer.Shampoo,
        [
            {"lr": 0.01},
            {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.1, "weight_decouple": True,
             "fixed_decay": True},
            {"lr": 0.01, "momentum": 0.5, "preconditioning_compute_steps": 3,
             "weight_decay": 0.1, "matrix_eps": 1e-4},
            {"lr": 0.01, "weight_decay": 0.1, "maximize": True},
        ],
        tolerance=1e-13,
    ),
]

PACKAGE_INFO_BY_NAME = {info.name: info for info in PACKAGE_INFOS}


def richest(info: PackageInfo) -> dict[str, Any]:
    """The setting with the most hyperparameters set (most state to carry)."""
    return max(info.settings, key=len)


def build(info: PackageInfo, cls: type, params: Any, setting: dict[str, Any]) -> Any:
    """``cls(params, **setting)``, made ready to step (``info.prepare``)."""
    opt = cls(params, **setting)
    info.prepare(opt)
    return opt
