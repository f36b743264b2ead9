"""Schedules: hyperparameter values as closed-form functions of the step.

Build a schedule, call it with a step, attach it to any optimizer::

    from descentlab.schedules import attach, warmup_cosine

    sched = warmup_cosine(peak_value=3e-4, warmup_steps=500, total_steps=10_000)
    sched(0), sched(500), sched(10_000)        # 0.0, 3e-4, 0.0
    controller = attach(optimizer, lr=sched)   # a torch LRScheduler too
    for batch in loader:
        ...
        optimizer.step()
        controller.step()

Modules: :mod:`.base` (protocol, ``Constant``, ``Join``, ``Product``),
:mod:`.decay`, :mod:`.cycles`, :mod:`.warmup`, :mod:`.plateau`,
:mod:`.controller` and :mod:`.plot`.
"""

from descentlab.schedules.base import (
    Constant,
    Join,
    LambdaSchedule,
    MultiplicativeSchedule,
    PiecewiseConstant,
    Product,
    Schedule,
    as_schedule,
)
from descentlab.schedules.controller import ScheduleController, attach
from descentlab.schedules.cycles import AnnealCycle, Cyclic, OneCycle, one_cycle_momentum
from descentlab.schedules.decay import (
    CosineDecay,
    CosineWarmRestarts,
    ExponentialDecay,
    InverseTimeDecay,
    LinearSchedule,
    MultiStepDecay,
    PolynomialDecay,
    StepDecay,
)
from descentlab.schedules.plateau import ReduceOnPlateau
from descentlab.schedules.warmup import Warmup, WarmupStableDecay, warmup_cosine

__all__ = [
    "Schedule",
    "Constant",
    "LambdaSchedule",
    "MultiplicativeSchedule",
    "Product",
    "Join",
    "PiecewiseConstant",
    "as_schedule",
    "InverseTimeDecay",
    "StepDecay",
    "MultiStepDecay",
    "ExponentialDecay",
    "PolynomialDecay",
    "LinearSchedule",
    "CosineDecay",
    "CosineWarmRestarts",
    "Cyclic",
    "AnnealCycle",
    "OneCycle",
    "one_cycle_momentum",
    "Warmup",
    "WarmupStableDecay",
    "warmup_cosine",
    "ReduceOnPlateau",
    "ScheduleController",
    "attach",
]
