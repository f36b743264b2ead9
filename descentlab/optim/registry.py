"""Optimizers by name: :func:`available_optimizers` and :func:`make_optimizer`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from descentlab.optim.adafactor import Adafactor
from descentlab.optim.adam import Adam, Adamax, AdamW, NAdam, RAdam, SparseAdam
from descentlab.optim.adam_variants import ADOPT, AdEMAMix
from descentlab.optim.adaptive import Adadelta, Adagrad, RMSprop
from descentlab.optim.asgd import ASGD
from descentlab.optim.lion import Lion
from descentlab.optim.lr_free import DAdaptAdam, DAdaptSGD, Prodigy
from descentlab.optim.mars import MARS
from descentlab.optim.muon import Muon
from descentlab.optim.rprop import Rprop
from descentlab.optim.sgd import SGD
from descentlab.optim.shampoo import PlainShampoo, Shampoo
from descentlab.optim.soap import SOAP
from descentlab.optim.trust_ratio import LAMB, LARS
from descentlab.schedule_free import AdamWScheduleFree, RAdamScheduleFree, SGDScheduleFree
from descentlab.second_order.sophia import AdaHessian, SophiaH

__all__ = ["OPTIMIZERS", "available_optimizers", "make_optimizer", "describe_optimizer"]

#: Registry name → optimizer class.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": SGD,
    "adagrad": Adagrad,
    "rmsprop": RMSprop,
    "adadelta": Adadelta,
    "adam": Adam,
    "adamw": AdamW,
    "nadam": NAdam,
    "radam": RAdam,
    "adamax": Adamax,
    "sparse_adam": SparseAdam,
    "muon": Muon,
    "sgd_schedulefree": SGDScheduleFree,
    "adamw_schedulefree": AdamWScheduleFree,
    "radam_schedulefree": RAdamScheduleFree,
    "sophiah": SophiaH,
    "adahessian": AdaHessian,
    "lion": Lion,
    "lars": LARS,
    "lamb": LAMB,
    "adopt": ADOPT,
    "ademamix": AdEMAMix,
    "prodigy": Prodigy,
    "dadapt_adam": DAdaptAdam,
    "dadapt_sgd": DAdaptSGD,
    "soap": SOAP,
    "asgd": ASGD,
    "rprop": Rprop,
    "adafactor": Adafactor,
    "shampoo": Shampoo,
    "mars": MARS,
    "plain_shampoo": PlainShampoo,
}


def available_optimizers() -> list[str]:
    """Names accepted by :func:`make_optimizer`, in registry order."""
    return list(OPTIMIZERS)


def describe_optimizer(name: str) -> str:
    """First line of the optimizer's docstring, then its declared hyperparameters and defaults.

    For a rule-based optimizer the list comes from its rule's declarations
    (``lr=0.001, betas=(0.9, 0.999), ...``), the one place they are written.
    """
    cls = _lookup(name)
    summary = (cls.__doc__ or "").strip().splitlines()[0]
    rule = getattr(cls, "rule", None)
    if rule is None:
        return summary
    values = ", ".join(f"{hp.name}={hp.default!r}" for hp in rule.hparams)
    return f"{summary} [{values}]"


def _lookup(name: str) -> type[torch.optim.Optimizer]:
    key = name.lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key]


def make_optimizer(name: str, params: Iterable[Any], **hparams: Any) -> torch.optim.Optimizer:
    """Build the optimizer called ``name`` (case-insensitive) over ``params``.

    ``hparams`` are the class's keyword arguments (``lr=0.1, momentum=0.9``).
    An unknown name raises a ValueError listing the valid names; an unknown
    hyperparameter raises a TypeError naming it.
    """
    cls = _lookup(name)
    try:
        return cls(params, **hparams)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise TypeError(f"{name}: {err}") from None
        raise
