"""Schedule-Free optimizers (Defazio et al. 2024): no learning-rate schedule, train/eval modes.

``SGDScheduleFree``, ``AdamWScheduleFree`` and ``RAdamScheduleFree`` take the
``schedulefree`` package's arguments and state-dict layout; the method, the
modes and what a checkpoint holds are in :mod:`descentlab.schedule_free.base`;
helpers for evaluating (bit-exact return to the training point, BatchNorm
statistics at the evaluation point) in :mod:`descentlab.schedule_free.evaluation`.

::

    opt = descentlab.AdamWScheduleFree(model.parameters(), lr=2.5e-3, warmup_steps=100)
    opt.train(); model.train()          # before training steps
    ...
    opt.eval(); model.eval()            # before evaluating or saving
"""

from descentlab.schedule_free.base import ScheduleFreeOptimizer
from descentlab.schedule_free.evaluation import (
    evaluation_mode,
    has_modes,
    recompute_batchnorm,
    start_training,
)
from descentlab.schedule_free.optimizers import (
    AdamWScheduleFree,
    RAdamScheduleFree,
    SGDScheduleFree,
)

__all__ = [
    "ScheduleFreeOptimizer",
    "SGDScheduleFree",
    "AdamWScheduleFree",
    "RAdamScheduleFree",
    "evaluation_mode",
    "has_modes",
    "recompute_batchnorm",
    "start_training",
]
