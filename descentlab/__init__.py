"""descentlab: optimisers for deep networks on PyTorch."""

from descentlab.optim import (
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    NAdam,
    RAdam,
    RMSprop,
    available_optimizers,
    make_optimizer,
)

__version__ = "0.1.0"

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
    "available_optimizers",
    "make_optimizer",
]
