"""The optimizer registry of the conformance suite (in the spirit of torch's OptimizerInfo).

Each entry names one descentlab optimizer, the torch.optim class it must
match, at least three hyperparameter settings that together cover weight
decay, maximize, nesterov, dampening, amsgrad, centered and momentum, and a
setting that converges on the ill-conditioned quadratic and on Rosenbrock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytorch_optimizer
import torch

import descentlab
from descentlab.rules.base import ELEMENTWISE, TENSOR


@dataclass(frozen=True)
class OptimizerInfo:
    """How to test one optimizer."""

    name: str
    ours: type
    torch_cls: type
    settings: list[dict[str, Any]]
    converge: dict[str, Any] = field(default_factory=dict)
    #: steps for the quadratic and for Rosenbrock (about 1.5–2× what the setting needs)
    converge_steps: tuple[int, int] = (300, 4000)
    #: a different converging setting for Rosenbrock, where one is needed
    converge_rosenbrock: dict[str, Any] | None = None
    #: the rule kind the optimizer declares (descentlab.rules.base.ELEMENTWISE or TENSOR)
    kind: str = ELEMENTWISE
    #: the engines it supports (the suite runs it under each of ENGINES_UNDER_TEST among them)
    engines: tuple[str, ...] = ("reference", "flat", "compiled", "auto")


INFOS = [
    OptimizerInfo(
        "sgd",
        descentlab.SGD,
        torch.optim.SGD,
        [
            {"lr": 0.05},
            {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1},
            {"lr": 0.02, "momentum": 0.9, "nesterov": True, "maximize": True},
            {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.01},
        ],
        converge={"lr": 0.01, "momentum": 0.9, "nesterov": True},
        converge_rosenbrock={"lr": 1e-3, "momentum": 0.9},
        converge_steps=(200, 2000),
    ),
    OptimizerInfo(
        "adagrad",
        descentlab.Adagrad,
        torch.optim.Adagrad,
        [
            {"lr": 0.1},
            {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1},
            {"lr": 0.05, "initial_accumulator_value": 0.5, "eps": 1e-6, "maximize": True},
        ],
        converge={"lr": 0.5},
        converge_steps=(100, 9000),
    ),
    OptimizerInfo(
        "rmsprop",
        descentlab.RMSprop,
        torch.optim.RMSprop,
        [
            {"lr": 0.01},
            {"lr": 0.01, "centered": True, "weight_decay": 0.1},
            {"lr": 0.005, "momentum": 0.9, "alpha": 0.9, "maximize": True},
            {"lr": 0.005, "momentum": 0.5, "centered": True, "eps": 1e-4},
        ],
        converge={"lr": 1e-3, "momentum": 0.9},
        converge_steps=(200, 2000),
    ),
    OptimizerInfo(
        "adadelta",
        descentlab.Adadelta,
        torch.optim.Adadelta,
        [
            {},
            {"lr": 0.5, "rho": 0.95, "weight_decay": 0.1},
            {"lr": 2.0, "eps": 1e-4, "maximize": True},
        ],
        # near a minimum Adadelta's step tends to lr·g, so lr must be < 2/L
        converge={"lr": 0.01, "eps": 1e-2},
        converge_rosenbrock={"lr": 1e-3, "eps": 1.0},
        converge_steps=(1200, 16000),
    ),
    OptimizerInfo(
        "adam",
        descentlab.Adam,
        torch.optim.Adam,
        [
            {"lr": 0.01},
            {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1},
            {"lr": 0.005, "betas": (0.8, 0.99), "eps": 1e-6, "maximize": True},
            {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "amsgrad": True},
        ],
        converge={"lr": 0.02},
        converge_steps=(300, 4000),
    ),
    OptimizerInfo(
        "adamw",
        descentlab.AdamW,
        torch.optim.AdamW,
        [
            {"lr": 0.01},
            {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1},
            {"lr": 0.005, "betas": (0.8, 0.99), "maximize": True},
        ],
        converge={"lr": 0.02, "weight_decay": 0.0},
        converge_steps=(300, 4000),
    ),
    OptimizerInfo(
        "nadam",
        descentlab.NAdam,
        torch.optim.NAdam,
        [
            {"lr": 0.01},
            {"lr": 0.01, "weight_decay": 0.1, "momentum_decay": 0.01},
            {"lr": 0.005, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        ],
        converge={"lr": 0.005},
        converge_steps=(1000, 8500),
    ),
    OptimizerInfo(
        "radam",
        descentlab.RAdam,
        torch.optim.RAdam,
        [
            {"lr": 0.01},
            {"lr": 0.01, "weight_decay": 0.1},
            {
                "lr": 0.005,
                "betas": (0.8, 0.9),
                "decoupled_weight_decay": True,
                "weight_decay": 0.1,
                "maximize": True,
            },
        ],
        converge={"lr": 0.005},
        converge_steps=(2000, 12000),
    ),
    OptimizerInfo(
        "adamax",
        descentlab.Adamax,
        torch.optim.Adamax,
        [
            {"lr": 0.01},
            {"lr": 0.01, "weight_decay": 0.1},
            {"lr": 0.005, "betas": (0.8, 0.99), "eps": 1e-6, "maximize": True},
        ],
        converge={"lr": 0.02},
        converge_steps=(400, 6500),
    ),
    OptimizerInfo(
        "asgd",
        descentlab.ASGD,
        torch.optim.ASGD,
        [
            {"lr": 0.05},
            {"lr": 0.05, "lambd": 0.01, "alpha": 0.5, "t0": 20, "weight_decay": 0.1},
            {"lr": 0.02, "lambd": 1e-3, "t0": 0, "maximize": True},
        ],
        converge={"lr": 0.015, "t0": 1e9},
        converge_rosenbrock={"lr": 2e-3, "lambd": 0.0, "t0": 1e9},
        converge_steps=(600, 8000),
    ),
    OptimizerInfo(
        "rprop",
        descentlab.Rprop,
        torch.optim.Rprop,
        [
            {"lr": 0.01},
            {"lr": 0.05, "etas": (0.3, 1.5), "step_sizes": (1e-4, 0.5)},
            {"lr": 0.01, "etas": (0.6, 1.1), "maximize": True},
        ],
        converge={"lr": 0.01},
        converge_steps=(300, 4000),
    ),
    OptimizerInfo(
        "adafactor",
        descentlab.Adafactor,
        torch.optim.Adafactor,
        [
            {"lr": 0.05},
            {"lr": 0.05, "weight_decay": 0.1, "beta2_decay": -0.5},
            {"lr": 0.02, "eps": (1e-20, 1e-2), "d": 2.0, "maximize": True},
        ],
        converge={"lr": 0.3},
        # ρ = min(lr, 1/√t) shrinks the step as 1/√t: Rosenbrock's valley takes ~11,500 steps
        converge_rosenbrock={"lr": 0.1, "beta2_decay": -1.0},
        converge_steps=(1500, 16000),
        kind=TENSOR,
    ),
]

INFO_BY_NAME = {info.name: info for info in INFOS}

#: Optimizers that take sparse gradients (``nn.Embedding(sparse=True)``), with settings torch
#: accepts for them (no weight decay). SparseAdam takes nothing else, so it is not in INFOS.
SPARSE_INFOS = [
    OptimizerInfo(
        "sgd",
        descentlab.SGD,
        torch.optim.SGD,
        [
            {"lr": 0.1},
            {"lr": 0.05, "momentum": 0.9},
            {"lr": 0.05, "momentum": 0.8, "dampening": 0.3},
            {"lr": 0.02, "momentum": 0.9, "nesterov": True, "maximize": True},
        ],
    ),
    OptimizerInfo(
        "adagrad",
        descentlab.Adagrad,
        torch.optim.Adagrad,
        [
            {"lr": 0.1},
            {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.5},
            {"lr": 0.05, "eps": 1e-6, "maximize": True},
        ],
    ),
    OptimizerInfo(
        "sparse_adam",
        descentlab.SparseAdam,
        torch.optim.SparseAdam,
        [
            {"lr": 0.01},
            {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6},
            {"lr": 0.01, "maximize": True},
        ],
    ),
]


#: Optimizers for 2-D parameters only (tested in their own suite, tests/optim/test_muon.py:
#: the shared problem above has vectors and a scalar, which they refuse).
MATRIX_INFOS = [
    OptimizerInfo(
        "muon",
        descentlab.Muon,
        torch.optim.Muon,
        [{}, {"lr": 0.02, "adjust_lr_fn": "match_rms_adamw"}, {"nesterov": False}],
        kind=TENSOR,
    ),
]


#: The Adam family and Lion with the cautious mask (``cautious=True``, a tensor rule per group):
#: tests/optim/test_cautious.py checks each setting against the class's reference with the mask
#: applied by the test to the reference's step (torch.optim's; pytorch_optimizer.Lion's own mask),
#: resume, copies and engines. Weight decay is given in every setting (the test reads it).
CAUTIOUS_INFOS = [
    OptimizerInfo(name, cls, torch_cls, settings, kind=TENSOR)
    for name, cls, torch_cls, settings in [
        ("adam", descentlab.Adam, torch.optim.Adam, [
            {"lr": 0.01, "weight_decay": 0.0},
            {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1, "maximize": True},
            {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
        ]),
        ("adamw", descentlab.AdamW, torch.optim.AdamW, [
            {"lr": 0.01, "weight_decay": 1e-2},
            {"lr": 0.005, "betas": (0.8, 0.99), "weight_decay": 0.1, "amsgrad": True},
        ]),
        ("nadam", descentlab.NAdam, torch.optim.NAdam, [
            {"lr": 0.01, "weight_decay": 0.1, "momentum_decay": 0.01},
            {"lr": 0.005, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        ]),
        ("radam", descentlab.RAdam, torch.optim.RAdam, [
            {"lr": 0.01, "weight_decay": 0.1},
            {"lr": 0.005, "betas": (0.8, 0.9), "weight_decay": 0.1,
             "decoupled_weight_decay": True},
        ]),
        ("adamax", descentlab.Adamax, torch.optim.Adamax, [
            {"lr": 0.01, "weight_decay": 0.1},
            {"lr": 0.005, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.0,
             "maximize": True},
        ]),
        ("lion", descentlab.Lion, pytorch_optimizer.Lion, [
            {"lr": 0.01, "weight_decay": 0.0},
            {"lr": 0.01, "betas": (0.8, 0.95), "weight_decay": 0.5, "maximize": True},
        ]),
    ]
]


def setting_cases(engine: str | None = None) -> list[tuple[OptimizerInfo, dict[str, Any]]]:
    """Every (optimizer, setting) pair (of optimizers supporting ``engine``)."""
    return [
        (info, s)
        for info in INFOS
        if engine is None or engine in info.engines
        for s in info.settings
    ]


def engine_cases(engines: list[str]) -> list[tuple[OptimizerInfo, dict[str, Any], str]]:
    """Every (optimizer, setting, engine) triple with an engine the optimizer supports."""
    return [(info, s, e) for e in engines for info, s in setting_cases(e)]


def case_id(case: tuple[OptimizerInfo, dict[str, Any]]) -> str:
    """A readable test id such as ``adam-lr=0.01-amsgrad=True``."""
    info, setting = case
    return "-".join([info.name] + [f"{k}={v}" for k, v in setting.items()])
