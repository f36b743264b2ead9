"""The ``torch.optim.Optimizer`` classes of descentlab and the optimizer registry."""

from descentlab.optim.adafactor import Adafactor
from descentlab.optim.adam import Adam, Adamax, AdamW, NAdam, RAdam, SparseAdam
from descentlab.optim.adam_variants import ADOPT, AdEMAMix
from descentlab.optim.adaptive import Adadelta, Adagrad, RMSprop
from descentlab.optim.asgd import ASGD
from descentlab.optim.base import RuleOptimizer
from descentlab.optim.lion import Lion
from descentlab.optim.lr_free import DAdaptAdam, DAdaptSGD, Prodigy
from descentlab.optim.mars import MARS
from descentlab.optim.muon import Muon
from descentlab.optim.registry import (
    OPTIMIZERS,
    available_optimizers,
    describe_optimizer,
    make_optimizer,
)
from descentlab.optim.rprop import Rprop
from descentlab.optim.sgd import SGD
from descentlab.optim.shampoo import PlainShampoo, Shampoo
from descentlab.optim.soap import SOAP
from descentlab.optim.trust_ratio import LAMB, LARS

__all__ = [
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adadelta",
    "Adam",
    "AdamW",
    "NAdam",
    "RAdam",
    "Adamax",
    "SparseAdam",
    "Lion",
    "LARS",
    "LAMB",
    "ADOPT",
    "AdEMAMix",
    "Prodigy",
    "DAdaptAdam",
    "DAdaptSGD",
    "SOAP",
    "ASGD",
    "Rprop",
    "Adafactor",
    "Muon",
    "Shampoo",
    "MARS",
    "PlainShampoo",
    "RuleOptimizer",
    "OPTIMIZERS",
    "available_optimizers",
    "describe_optimizer",
    "make_optimizer",
]
