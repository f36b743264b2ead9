"""descentlab: optimisers for deep networks on PyTorch.

The top level re-exports what most users need; each family lives in its own
sub-package (``descentlab.schedules``, ``descentlab.linesearch``,
``descentlab.second_order``, ``descentlab.wrappers``, ``descentlab.diagnostics``,
``descentlab.problems``, ``descentlab.bench``) with its full API there.
"""

from descentlab.accumulation import accumulate_gradients
from descentlab.advisor import Recommendation, advise
from descentlab.averaging import ema_model
from descentlab.clipping import adaptive_clip_grad_, clip_grad_norm_, clip_grad_value_
from descentlab.diagnostics import (
    Finding,
    FindingKind,
    Severity,
    TrainingMonitor,
    diagnose,
    lr_range_test,
)
from descentlab.init import init_model
from descentlab.muon_groups import muon_param_groups
from descentlab.nn import SwitchableNorm, SwitchableNorm1d, SwitchableNorm2d, SwitchableNorm3d
from descentlab.optim import (
    ADOPT,
    ASGD,
    LAMB,
    LARS,
    MARS,
    SGD,
    SOAP,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    AdEMAMix,
    DAdaptAdam,
    DAdaptSGD,
    Lion,
    Muon,
    NAdam,
    PlainShampoo,
    Prodigy,
    RAdam,
    RMSprop,
    Rprop,
    Shampoo,
    SparseAdam,
    available_optimizers,
    make_optimizer,
)
from descentlab.param_groups import weight_decay_param_groups
from descentlab.problems import DEFAULT_SUITE, Problem, available_problems, get_problem
from descentlab.schedule_free import (
    AdamWScheduleFree,
    RAdamScheduleFree,
    SGDScheduleFree,
    evaluation_mode,
    recompute_batchnorm,
)
from descentlab.schedules import ScheduleController, attach, warmup_cosine
from descentlab.second_order import (
    LBFGS,
    AdaHessian,
    LineSearchGD,
    NewtonCG,
    NonlinearCG,
    PerturbedGD,
    SophiaH,
)
from descentlab.wrappers import SAM, GradientAccumulator, Lookahead, NonFiniteGuard, WithLineSearch

__version__ = "0.1.0"

__all__ = [
    # elementwise optimizers
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
    # newer Adam variants (pytorch_optimizer's arguments)
    "ADOPT",
    "AdEMAMix",
    # learning-rate-free optimizers (global reductions)
    "Prodigy",
    "DAdaptAdam",
    "DAdaptSGD",
    # per-matrix preconditioners (tensor rules)
    "SOAP",
    "Shampoo",
    "MARS",
    "PlainShampoo",
    "ASGD",
    "Rprop",
    "Adafactor",
    "Muon",
    "muon_param_groups",
    "available_optimizers",
    "make_optimizer",
    # Schedule-Free (train()/eval() modes)
    "SGDScheduleFree",
    "AdamWScheduleFree",
    "RAdamScheduleFree",
    "evaluation_mode",
    "recompute_batchnorm",
    # closure-based, line-search and second-order optimizers
    "LBFGS",
    "NewtonCG",
    "NonlinearCG",
    "LineSearchGD",
    "PerturbedGD",
    "SophiaH",
    "AdaHessian",
    "WithLineSearch",
    # wrappers that change how a step is taken
    "SAM",
    "Lookahead",
    # around the step
    "ScheduleController",
    "attach",
    "warmup_cosine",
    "NonFiniteGuard",
    "clip_grad_norm_",
    "clip_grad_value_",
    "adaptive_clip_grad_",
    "accumulate_gradients",
    "GradientAccumulator",
    "weight_decay_param_groups",
    "ema_model",
    # diagnostics, initialisation, normalisation
    "TrainingMonitor",
    "Finding",
    "FindingKind",
    "Severity",
    "diagnose",
    "lr_range_test",
    "init_model",
    "SwitchableNorm",
    "SwitchableNorm1d",
    "SwitchableNorm2d",
    "SwitchableNorm3d",
    # the advisor
    "advise",
    "Recommendation",
    # benchmark problems
    "Problem",
    "get_problem",
    "available_problems",
    "DEFAULT_SUITE",
]
