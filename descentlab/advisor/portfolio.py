"""The advisor's portfolio: optimizers at their defaults, looked up in the registry at run time.

Schmidt, Schneider & Hennig (2021, "Descending through a crowded valley"; 15
optimizers, 8 problems, over 50,000 runs) found that no optimizer dominates
and that trying several at their defaults is about as good as tuning one.
So the advisor tries a few, each at its published defaults, and measures
only the learning rate (by a range test):

==============  =====================================  ==========================  ==========
candidate       optimizer (registry name)              defaults                    schedule
==============  =====================================  ==========================  ==========
adamw           ``adamw``                              torch's (β 0.9/0.999,       warm-up +
                                                       wd 0.01)                    cosine
nadamw          ``nadam``, decoupled decay,            AlgoPerf's self-tuning      warm-up +
                no momentum schedule                   β 0.9327/0.9955, wd 0.0812  cosine
momentum        ``sgd``                                momentum 0.9                warm-up +
                                                                                   cosine
lbfgs           :class:`descentlab.LBFGS`              history 10, strong Wolfe    none
                (full batch, ≤ 10,000 parameters)      (≤ 24 trials a step), no
                                                       early stop, lr 1 (no range
                                                       test)
schedule_free   ``adamw_schedulefree``                 its defaults                warm-up
muon            ``muon`` + ``muon_param_groups``, if   its defaults                warm-up +
                the model has hidden matrices                                      cosine
lion            ``lion``                               its defaults                warm-up +
                                                                                   cosine
==============  =====================================  ==========================  ==========

A range must reach past where the loss turns up, or the "minimum/10" rule
returns a tenth of the range's end instead of a measurement (the advice says
so when a sweep ends still falling). Lion's sweep ends at 1, not 0.1: up to
0.1 its smoothed loss still fell at the last step on breast_cancer_logreg,
noisy_quadratic and digits_mlp, and every suggestion was 0.01; to 1 they are
0.030–0.045, 0.055–0.10 and 0.009–0.014 after 20–40 steps.

Candidates whose optimizer is not in :data:`descentlab.optim.registry.OPTIMIZERS`
when the advice runs are skipped, with the reason in the evidence. On a budget
too small for all, the first ones of the priority order are tried: adamw,
lbfgs, momentum, nadamw, schedule_free, muon, lion.

L-BFGS takes one iteration per ``step`` (``max_iter=1``) with up to 24
line-search trials (``max_eval=25``; torch's default ``max_iter·5//4`` would
be 1, which leaves its strong Wolfe search no trial point), and
``tolerance_grad = tolerance_change = 0``: it stops only when the budget is
spent, not when the gradient falls below 1e-7 (which leaves a quadratic at
~1e-13 instead of float32's 0).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

__all__ = ["Candidate", "PORTFOLIO", "build_portfolio", "registry_name", "hidden_matrices",
           "make_candidate_optimizer", "LBFGS_MAX_PARAMS"]

LBFGS_MAX_PARAMS = 10_000
"""L-BFGS is a candidate only for full-batch problems with at most this many parameters."""


@dataclass(frozen=True)
class Candidate:
    """One optimizer of the portfolio at its defaults.

    Attributes:
        name: the candidate's label (``"adamw"``).
        names: registry names it may be registered under (the first found is used).
        defaults: hyperparameters besides the learning rate.
        lr_range: ``(low, high)`` of its learning-rate range test; ``None``: no test.
        lr: the learning rate when there is no range test.
        schedule: ``"warmup_cosine"``, ``"warmup"`` (then constant), ``"warmup_average"``
            (constant, the iterates averaged over the last half: :meth:`averaged`) or
            ``"none"``.
        needs: ``"full_batch"`` or ``"hidden_matrices"`` or ``None``.
        description: one line for the report.
    """

    name: str
    names: tuple[str, ...]
    defaults: dict[str, Any]
    lr_range: tuple[float, float] | None
    schedule: str
    description: str
    lr: float | None = None
    needs: str | None = None
    optimizer: str = field(default="", compare=False)

    def resolved(self, optimizer: str) -> Candidate:
        """The candidate with the registry name it was found under."""
        return replace(self, optimizer=optimizer)

    def averaged(self) -> Candidate:
        """The candidate at a constant rate after its warm-up, its iterates averaged
        uniformly over the last half of the steps (tail averaging), where it decays
        the rate by a cosine; other schedules are kept."""
        return replace(self, schedule="warmup_average") if self.schedule == "warmup_cosine" \
            else self


PORTFOLIO: tuple[Candidate, ...] = (
    Candidate("adamw", ("adamw",), {"weight_decay": 0.01}, (1e-4, 1.0), "warmup_cosine",
              "AdamW at torch's defaults"),
    Candidate("lbfgs", ("lbfgs",), {"history_size": 10, "max_iter": 1, "max_eval": 25,
                                    "tolerance_grad": 0.0, "tolerance_change": 0.0,
                                    "line_search_fn": "strong_wolfe"},
              None, "none", "L-BFGS with a strong Wolfe line search (full batch)", lr=1.0,
              needs="full_batch"),
    Candidate("momentum", ("sgd",), {"momentum": 0.9}, (1e-3, 10.0), "warmup_cosine",
              "SGD with heavy-ball momentum 0.9"),
    Candidate("nadamw", ("nadam",), {"betas": (0.9327, 0.9955), "weight_decay": 0.0812,
                                     "decoupled_weight_decay": True, "momentum_decay": 1000.0},
              (1e-4, 1.0), "warmup_cosine", "NAdamW at AlgoPerf's self-tuning settings"),
    Candidate("schedule_free", ("adamw_schedulefree",), {}, (1e-4, 1.0), "warmup",
              "Schedule-Free AdamW at its defaults"),
    Candidate("muon", ("muon",), {}, (1e-3, 1.0), "warmup_cosine",
              "Muon for hidden matrices, AdamW for the rest", needs="hidden_matrices"),
    Candidate("lion", ("lion",), {}, (1e-5, 1.0), "warmup_cosine", "Lion at its defaults"),
)
"""Every candidate, in priority order."""


def registry_name(candidate: Candidate) -> str | None:
    """The name ``candidate`` is registered under now, or ``None`` (L-BFGS: ``"lbfgs"``)."""
    if candidate.name == "lbfgs":
        return "lbfgs"
    from descentlab.optim.registry import OPTIMIZERS

    return next((name for name in candidate.names if name in OPTIMIZERS), None)


def hidden_matrices(model: nn.Module | None) -> int:
    """Number of parameters :func:`descentlab.muon_param_groups` gives to Muon (the
    hidden matrices, chosen by the model's structure)."""
    if model is None:
        return 0
    from descentlab.muon_groups import muon_param_groups

    return sum(1 for *_, rule, _ in muon_param_groups(model).choices if rule == "muon")


def build_portfolio(
    *, full_batch: bool, num_params: int, model: nn.Module | None,
    only: Iterable[str] | None = None,
) -> tuple[list[Candidate], dict[str, str]]:
    """The candidates that apply here, and the reason each other one was skipped.

    ``only`` restricts the portfolio to those candidate names (for tests and
    experiments).
    """
    keep = None if only is None else set(only)
    chosen: list[Candidate] = []
    skipped: dict[str, str] = {}
    for cand in PORTFOLIO:
        if keep is not None and cand.name not in keep:
            continue
        name = registry_name(cand)
        if name is None:
            skipped[cand.name] = "not in the optimizer registry"
        elif cand.needs == "full_batch" and not full_batch:
            skipped[cand.name] = "mini-batch training (L-BFGS needs the same function each step)"
        elif cand.needs == "full_batch" and num_params > LBFGS_MAX_PARAMS:
            skipped[cand.name] = f"{num_params:,} parameters > {LBFGS_MAX_PARAMS:,}"
        elif cand.needs == "hidden_matrices" and hidden_matrices(model) == 0:
            skipped[cand.name] = "the model has no hidden weight matrices"
        else:
            chosen.append(cand.resolved(name))
    return chosen, skipped


def make_candidate_optimizer(
    candidate: Candidate, params: Any, lr: float, model: nn.Module | None = None
) -> torch.optim.Optimizer:
    """Build ``candidate``'s optimizer with learning rate ``lr`` over ``params``.

    Muon's groups come from ``descentlab.muon_param_groups(model, lr=lr)``.
    """
    import descentlab

    if candidate.optimizer == "lbfgs":
        return descentlab.LBFGS(params, lr=lr, **candidate.defaults)
    if candidate.needs == "hidden_matrices":
        groups = descentlab.muon_param_groups(model, lr=lr)
        return descentlab.make_optimizer(candidate.optimizer, groups, **candidate.defaults)
    return descentlab.make_optimizer(candidate.optimizer, params, lr=lr, **candidate.defaults)
