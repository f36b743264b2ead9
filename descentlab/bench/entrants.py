"""Named entrants of the benchmark: an optimizer plus its documented search space.

An *entrant* is what the benchmark compares: an optimizer name understood by
:func:`descentlab.make_optimizer`, hyperparameters fixed by the entrant (e.g.
``nesterov=True``), and a search space that Optuna samples during tuning.
``gd``, ``momentum`` and ``nesterov`` take their optimizer, fixed settings and
description from the named presets (:mod:`descentlab.optim.presets`).
Every search space samples the learning rate ``lr`` on a log scale, so the
learning-rate sensitivity curve exists for every entrant.

The seeds' family (``SEED_FAMILY``) is compared by default:

=========  ====================  ==============================================
entrant    optimizer             search space (log = log-uniform)
=========  ====================  ==============================================
gd         SGD, full batch       lr ∈ [1e-4, 1] log
sgd        SGD, mini-batch       lr ∈ [1e-4, 1] log
momentum   SGD heavy-ball        lr ∈ [1e-4, 1] log, momentum ∈ [0.5, 0.99]
nesterov   SGD Nesterov          lr ∈ [1e-4, 1] log, momentum ∈ [0.5, 0.99]
adagrad    Adagrad               lr ∈ [1e-3, 10] log
rmsprop    RMSprop               lr ∈ [1e-5, 1e-1] log, alpha ∈ [0.9, 0.999]
adadelta   Adadelta              lr ∈ [1e-2, 100] log, rho ∈ [0.8, 0.99]
adam       Adam                  lr ∈ [1e-5, 1] log, beta1 ∈ [0.5, 0.95]
=========  ====================  ==============================================

Also available: ``adamw`` (lr, weight_decay ∈ [1e-5, 1e-1] log), ``nadam``,
``radam``, ``adamax``, ``adopt`` (lr, beta1), with ``beta2 = 0.999`` fixed (``adopt``:
0.9999, its default); ``ademamix`` (lr, alpha ∈ [1, 10] log); the
learning-rate-free ``prodigy`` and ``dadapt_adam`` (lr ∈ [0.1, 10] log, a
factor of the estimated step size, and beta1) and ``dadapt_sgd`` (lr ∈
[0.1, 10] log, momentum); ``asgd`` (lr ∈ [1e-4, 1] log), ``rprop`` (full batch,
lr ∈ [1e-4, 1e-1] log: its initial step size), ``adafactor`` (lr ∈ [1e-4, 1]
log: the cap of its relative step); ``cadamw`` and ``clion``, AdamW and Lion with the
cautious mask (``cautious=True``, Liang et al. 2024), with AdamW's and Lion's spaces; and wrapper
entrants, an optimizer inside a :mod:`descentlab.wrappers` wrapper (the
wrapper's settings go to it, the rest to the optimizer):

==============  ======================================  ==================================
entrant         wrapper over optimizer                  search space
==============  ======================================  ==================================
sam_sgd         SAM over SGD, momentum 0.9              lr ∈ [1e-4, 1] log, rho ∈ [0.01, 0.5] log
asam_sgd        adaptive SAM over SGD, momentum 0.9     lr ∈ [1e-4, 1] log, rho ∈ [0.05, 2] log
sam_adamw       SAM over AdamW                          lr ∈ [1e-5, 1] log, rho ∈ [0.01, 0.5] log
lookahead_sgd   Lookahead (k = 5) over SGD, mom. 0.9    lr ∈ [1e-4, 1] log, alpha ∈ [0.2, 0.9]
lookahead_adam  Lookahead (k = 5) over Adam             lr ∈ [1e-5, 1] log, alpha ∈ [0.2, 0.9]
==============  ======================================  ==================================

SAM's radius is its most sensitive setting after the learning rate (Foret et
al. 2021 tune ρ ∈ {0.01, 0.02, 0.05, 0.1, 0.2, 0.5}; ASAM's scale-invariant
radius is larger, 0.5–2 in Kwon et al. 2021); Lookahead is reported robust
to ``k`` (Zhang et al. 2019 use 5 or 10), so ``k = 5`` is fixed and ``alpha``
tuned. A SAM step costs two forward-backward passes, which time-to-target
counts.

The Schedule-Free entrants (trained in train mode, evaluated at their average
``x``; no schedule, no warm-up):

==================  ====================  =====================================
entrant             optimizer             search space
==================  ====================  =====================================
sgd_schedulefree    SGDScheduleFree       lr ∈ [1e-3, 10] log, momentum ∈ [0.5, 0.99]
adamw_schedulefree  AdamWScheduleFree     lr ∈ [1e-5, 1] log, beta1 ∈ [0.5, 0.95]
radam_schedulefree  RAdamScheduleFree     lr ∈ [1e-5, 1] log, beta1 ∈ [0.5, 0.95]
sophiah             SophiaH               lr ∈ [1e-3, 10] log, p ∈ [1e-3, 1] log
adahessian          AdaHessian            lr ∈ [1e-3, 1] log, beta1 ∈ [0.5, 0.95]
lion                Lion                  lr ∈ [1e-6, 0.1] log, beta1 ∈ [0.5, 0.95]
lars                LARS                  lr ∈ [1e-2, 1e3] log, momentum ∈ [0.5, 0.99]
lamb                LAMB                  lr ∈ [1e-5, 1] log, beta1 ∈ [0.5, 0.95]
soap                SOAP                  lr ∈ [1e-4, 1e-1] log, beta1 ∈ [0.5, 0.95] (β₂ 0.95)
shampoo             Shampoo               lr ∈ [1e-4, 1] log, beta1 ∈ [0.5, 0.95] (β₂ 0.999)
mars                MARS (AdamW form)     lr ∈ [1e-5, 1] log, beta1 ∈ [0.5, 0.99] (β₂ 0.99)
plain_shampoo       PlainShampoo (2018)   lr ∈ [1e-4, 1] log, momentum ∈ [0, 0.9]
==================  ====================  =====================================

Schedule-Free SGD's range starts and ends a decade above SGD's: its
recommended rates are 10–50× a tuned SGD's. β₁ is the averaging
interpolation of the Adam forms, the one hyperparameter they are most
sensitive to after the learning rate. SophiaH's clip bound ``p`` (the
paper's γ) caps every coordinate's step at ``lr·p``; it is tuned with the
learning rate. SophiaH (Hessian estimate every 10 steps) and AdaHessian
(every step) take their Hessian-vector products by finite differences
through the problems' closures: one extra gradient evaluation per estimate,
which steps-to-target does not count (wall time does). Shampoo's entrant
recomputes its roots every 10 steps (its default, 1000, is longer than most
benchmark runs) and grafts the step size of momentum SGD (its default), so its
range is SGD's. MARS runs with ``optimize_1d=True``: otherwise vectors (all of
an analytic problem's parameters) would take AdamW at its fixed ``lr_1d``,
untouched by the tuned rate. Lion's steps are ±lr
per coordinate, so its range sits a decade below Adam's (β₂ stays 0.99).
LARS's step is lr·κ‖θ‖/‖g‖ per matrix with κ = 1e-3, hence learning rates of
order 1–100 (the paper's); on vectors (all of an analytic problem's
parameters) it is plain momentum SGD.

The AlgoPerf NAdamW baseline recipe (Dahl et al. 2023; Kasimbeg et al. 2025)
is an entrant in two forms, both with a linear warm-up over the first 2% of
the steps and then cosine decay to 0 (:func:`descentlab.schedules.warmup_cosine`):

=======================  =========================================================
``algoperf_nadamw``      the self-tuning form's published setting, fixed: lr 1.749e-3,
                         β₁ 0.9327, β₂ 0.9955, decoupled weight decay 0.0812
``algoperf_nadamw_tuned``  the same recipe with lr ∈ [1e-5, 1] log and
                         weight_decay ∈ [1e-4, 1] log tuned (β's fixed as above)
=======================  =========================================================

NAdamW is descentlab's ``nadam`` with ``decoupled_weight_decay=True`` and
``momentum_decay=1000``, which makes Dozat's momentum schedule
μₜ = β₁(1 − ½·0.96^(tψ)) equal β₁ from the first step (0.96^1000 < 1e-17), as in
AlgoPerf's NAdamW. One difference remains: torch's form bias-corrects the
look-ahead momentum term β₁m by 1 − β₁^(t+1) where AlgoPerf's uses 1 − β₁^t (the
terms agree within 7% at step 1 and 0.1% from step 100 on); on a 20-D quadratic
with the recipe's warm-up, the iterates after 300 steps differ by 3.7%
(``tests/bench/test_bench_algoperf.py``).

"GD" is full-batch gradient descent: the problem is rebuilt with
``batch_size=None``; on analytic problems (already full batch) it is plain
SGD. Momentum is torch's heavy-ball form ``v = μv + g, θ = θ − lr·v``
(``dampening=0``); the averaged form ``v = βv + (1−β)g`` is the same method
with the learning rate rescaled by ``1/(1−β)``, so tuning ``lr`` covers it.
Budgets are small, so each space has at most two dimensions: the learning
rate and the one hyperparameter the method is most sensitive to after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from descentlab.optim.presets import PRESETS

__all__ = [
    "Param",
    "Entrant",
    "ENTRANTS",
    "ALGOPERF_NADAMW",
    "SEED_FAMILY",
    "available_entrants",
    "get_entrant",
    "make_optimizer",
]


@dataclass(frozen=True)
class Param:
    """One dimension of a search space: ``name`` sampled in ``[low, high]``.

    ``log=True`` samples log-uniformly. ``pair`` names a tuple argument the
    value belongs to (``("betas", 0, 0.999)`` puts the value at index 0 of
    ``betas`` and fixes index 1 to 0.999).
    """

    name: str
    low: float
    high: float
    log: bool = False
    pair: tuple[str, int, float] | None = None


def _digest(obj: Any) -> str:
    """First 12 hex digits of the SHA-256 of ``obj`` as sorted-key JSON (others via ``str``)."""
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Entrant:
    """An optimizer as a benchmark entrant.

    Attributes:
        name: registry key (``"momentum"``).
        optimizer: name for :func:`make_optimizer` (``"sgd"``).
        description: one line for listings and the report.
        space: the search space, one :class:`Param` per tuned hyperparameter.
        fixed: hyperparameters the entrant sets and does not tune.
        full_batch: run on the full training set every step (gradient descent).
        wrapper: a :mod:`descentlab.wrappers` registry name (``"sam"``) to wrap
            the optimizer in, or ``None``; the settings it names go to it
            (:func:`descentlab.wrappers.make_wrapped`).
        warmup_cosine: if set, the learning rate follows a linear warm-up over this
            fraction of the problem's steps and then cosine decay to 0.
    """

    name: str
    optimizer: str
    description: str
    space: tuple[Param, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    full_batch: bool = False
    wrapper: str | None = None
    warmup_cosine: float | None = None

    def suggest(self, trial: Any) -> dict[str, float]:
        """Sample a setting from an Optuna trial; returns the sampled values by name."""
        return {p.name: trial.suggest_float(p.name, p.low, p.high, log=p.log) for p in self.space}

    def hyperparameters(self, sampled: dict[str, float]) -> dict[str, Any]:
        """Turn sampled values into optimizer keyword arguments (adds ``fixed``, builds tuples)."""
        kwargs: dict[str, Any] = dict(self.fixed)
        for p in self.space:
            value = float(sampled[p.name])
            if p.pair is None:
                kwargs[p.name] = value
            else:
                arg, index, other = p.pair
                pair = [other, other]
                pair[index] = value
                kwargs[arg] = tuple(pair)
        return kwargs

    def build(
        self, params: Iterable[torch.Tensor], sampled: dict[str, float]
    ) -> torch.optim.Optimizer:
        """Create the optimizer for ``params`` with a sampled setting."""
        if self.wrapper is not None:
            from descentlab.wrappers import make_wrapped

            return make_wrapped(self.wrapper, self.optimizer, params,
                                **self.hyperparameters(sampled))
        return make_optimizer(self.optimizer, params, **self.hyperparameters(sampled))

    def attach_schedule(self, optimizer: torch.optim.Optimizer, steps: int) -> Any:
        """The entrant's schedule over ``steps`` steps attached to ``optimizer``, or ``None``.

        Returns a :class:`~descentlab.schedules.ScheduleController`, to be stepped
        once after every optimizer step.
        """
        if self.warmup_cosine is None:
            return None
        from descentlab.schedules import attach, warmup_cosine

        peak = float(optimizer.param_groups[0]["lr"])
        warmup = max(1, math.ceil(self.warmup_cosine * steps))
        return attach(optimizer, lr=warmup_cosine(peak, min(warmup, steps - 1), steps))

    def _identity(self) -> dict[str, Any]:
        """What the optimizer is: its name, its wrapper and schedule if it has them (hashes)."""
        identity: dict[str, Any] = {"optimizer": self.optimizer}
        if self.wrapper is not None:  # keeps the hashes of results stored before wrappers
            identity["wrapper"] = self.wrapper
        if self.warmup_cosine is not None:  # and of those stored before schedules
            identity["warmup_cosine"] = self.warmup_cosine
        return identity

    def space_hash(self) -> str:
        """Stable hash of the optimizer, fixed values and search space (keys stored results)."""
        return _digest(
            {
                **self._identity(),
                "fixed": self.fixed,
                "full_batch": self.full_batch,
                "space": [dataclasses.asdict(p) for p in self.space],
            }
        )

    def search_hash(self) -> str:
        """Hash of the optimizer, fixed values and search space only (not the name or batch).

        Seeds the sampler, so two entrants with the same search (``gd`` and
        ``sgd``) try the same settings; on a full-batch problem they then agree
        exactly, as they should.
        """
        return _digest(
            {
                **self._identity(),
                "fixed": self.fixed,
                "space": [dataclasses.asdict(p) for p in self.space],
            }
        )

    def describe_space(self) -> str:
        """The search space in words, e.g. ``lr ∈ [1e-04, 1] log; momentum ∈ [0.5, 0.99]``."""
        parts = [
            f"{p.name} = {p.low:g}" if p.low == p.high
            else f"{p.name} ∈ [{p.low:g}, {p.high:g}]" + (" log" if p.log else "")
            for p in self.space
        ]
        parts += [f"{k}={v}" for k, v in self.fixed.items()]
        if self.full_batch:
            parts.append("full batch")
        if self.warmup_cosine is not None:
            parts.append(f"warm-up {self.warmup_cosine:.0%} then cosine")
        return "; ".join(parts)


_TORCH_FALLBACK: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adadelta": torch.optim.Adadelta,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "adamax": torch.optim.Adamax,
    "asgd": torch.optim.ASGD,
    "rprop": torch.optim.Rprop,
    "adafactor": torch.optim.Adafactor,
}


def make_optimizer(
    name: str, params: Iterable[torch.Tensor], **hparams: Any
) -> torch.optim.Optimizer:
    """Create optimizer ``name`` with ``descentlab.make_optimizer`` (torch.optim if absent).

    descentlab's optimizers take torch.optim's argument names and defaults, so
    the same keyword arguments work for both.
    """
    try:
        from descentlab import make_optimizer as _make  # type: ignore[attr-defined]
    except ImportError:
        _make = None
    if _make is not None:
        return _make(name, params, **hparams)
    if name not in _TORCH_FALLBACK:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(_TORCH_FALLBACK)}")
    return _TORCH_FALLBACK[name](params, **hparams)


_LR = Param("lr", 1e-4, 1.0, log=True)
_MOMENTUM = Param("momentum", 0.5, 0.99)
_BETA1 = Param("beta1", 0.5, 0.95, pair=("betas", 0, 0.999))
_ADAM_LR = Param("lr", 1e-5, 1.0, log=True)

#: AlgoPerf's NAdamW baseline: the self-tuning form's published hyperparameters.
ALGOPERF_NADAMW: dict[str, Any] = {
    "lr": 1.749e-3,
    "betas": (0.9327, 0.9955),
    "weight_decay": 0.0812,
    "warmup_fraction": 0.02,
}
_NADAMW_FIXED = {
    "betas": ALGOPERF_NADAMW["betas"],
    "decoupled_weight_decay": True,
    "momentum_decay": 1000.0,
}

_RHO = Param("rho", 0.01, 0.5, log=True)
_ALPHA = Param("alpha", 0.2, 0.9)
_LR_FACTOR = Param("lr", 0.1, 10.0, log=True)


def _preset_entrant(name: str, space: tuple[Param, ...]) -> Entrant:
    """The entrant of a named preset: its optimizer, description, flags (fixed) and batch."""
    preset = PRESETS[name]
    return Entrant(name, preset.optimizer, preset.description, space,
                   fixed=dict(preset.flags), full_batch=preset.full_batch)


def _entrants() -> dict[str, Entrant]:
    items = [
        _preset_entrant("gd", (_LR,)),
        Entrant("sgd", "sgd", "stochastic gradient descent on mini-batches", (_LR,)),
        _preset_entrant("momentum", (_LR, _MOMENTUM)),
        _preset_entrant("nesterov", (_LR, _MOMENTUM)),
        Entrant(
            "adagrad",
            "adagrad",
            "Adagrad: lr / sqrt(sum of squared gradients)",
            (Param("lr", 1e-3, 10.0, log=True),),
        ),
        Entrant(
            "rmsprop",
            "rmsprop",
            "RMSProp: lr / sqrt(running mean of squared gradients)",
            (Param("lr", 1e-5, 1e-1, log=True), Param("alpha", 0.9, 0.999)),
        ),
        Entrant(
            "adadelta",
            "adadelta",
            "Adadelta: step = RMS(past steps) / RMS(gradients)",
            (Param("lr", 1e-2, 100.0, log=True), Param("rho", 0.8, 0.99)),
        ),
        Entrant(
            "adam",
            "adam",
            "Adam: bias-corrected first and second moment estimates",
            (_ADAM_LR, _BETA1),
        ),
        Entrant(
            "adamw",
            "adamw",
            "AdamW: Adam with decoupled weight decay",
            (_ADAM_LR, Param("weight_decay", 1e-5, 1e-1, log=True)),
        ),
        Entrant("nadam", "nadam", "NAdam: Adam with Nesterov momentum", (_ADAM_LR, _BETA1)),
        Entrant(
            "radam", "radam", "RAdam: Adam with a rectified variance warm-up", (_ADAM_LR, _BETA1)
        ),
        Entrant(
            "adamax",
            "adamax",
            "Adamax: Adam with the infinity norm",
            (Param("lr", 1e-4, 1.0, log=True), _BETA1),
        ),
        Entrant("cadamw", "adamw", "C-AdamW: AdamW stepping only where it agrees with g",
                (_ADAM_LR, Param("weight_decay", 1e-5, 1e-1, log=True)),
                fixed={"cautious": True}),
        Entrant("adopt", "adopt", "ADOPT: Adam normalised by the previous second moment",
                (_ADAM_LR, Param("beta1", 0.5, 0.95, pair=("betas", 0, 0.9999)))),
        Entrant("ademamix", "ademamix", "AdEMAMix: Adam plus a slow momentum",
                (_ADAM_LR, Param("alpha", 1.0, 10.0, log=True))),
        # learning-rate-free: lr multiplies the estimated step size (1 is the intended value)
        Entrant("prodigy", "prodigy", "Prodigy: Adam with its step size estimated",
                (_LR_FACTOR, _BETA1)),
        Entrant("dadapt_adam", "dadapt_adam", "D-Adaptation Adam: Adam with its step size "
                "estimated", (_LR_FACTOR, _BETA1)),
        Entrant("dadapt_sgd", "dadapt_sgd", "D-Adaptation SGD: dual averaging with its step "
                "size estimated", (_LR_FACTOR, _MOMENTUM)),
        Entrant(
            "sam_sgd",
            "sgd",
            "SAM over momentum SGD: the step uses the gradient at θ + ρ g/‖g‖",
            (_LR, _RHO),
            fixed={"momentum": 0.9},
            wrapper="sam",
        ),
        Entrant(
            "asam_sgd",
            "sgd",
            "adaptive SAM (ASAM) over momentum SGD: perturbation ρ θ²g/‖θg‖",
            (_LR, Param("rho", 0.05, 2.0, log=True)),
            fixed={"momentum": 0.9, "adaptive": True},
            wrapper="sam",
        ),
        Entrant(
            "sam_adamw",
            "adamw",
            "SAM over AdamW: the step uses the gradient at θ + ρ g/‖g‖",
            (_ADAM_LR, _RHO),
            wrapper="sam",
        ),
        Entrant(
            "lookahead_sgd",
            "sgd",
            "Lookahead over momentum SGD: every 5 steps φ ← φ + α(θ − φ), θ ← φ",
            (_LR, _ALPHA),
            fixed={"momentum": 0.9, "k": 5},
            wrapper="lookahead",
        ),
        Entrant(
            "lookahead_adam",
            "adam",
            "Lookahead over Adam: every 5 steps φ ← φ + α(θ − φ), θ ← φ",
            (_ADAM_LR, _ALPHA),
            fixed={"k": 5},
            wrapper="lookahead",
        ),
        Entrant(
            "sgd_schedulefree",
            "sgd_schedulefree",
            "Schedule-Free SGD: primal averaging instead of a schedule, evaluated at x",
            (Param("lr", 1e-3, 10.0, log=True), _MOMENTUM),
        ),
        Entrant(
            "adamw_schedulefree",
            "adamw_schedulefree",
            "Schedule-Free AdamW: AlgoPerf 2024 self-tuning winner, evaluated at x",
            (_ADAM_LR, _BETA1),
        ),
        Entrant(
            "radam_schedulefree",
            "radam_schedulefree",
            "Schedule-Free RAdam: rectification instead of warm-up, evaluated at x",
            (_ADAM_LR, _BETA1),
        ),
        Entrant(
            "sophiah",
            "sophiah",
            "SophiaH: momentum over a Hutchinson Hessian diagonal, clipped",
            (Param("lr", 1e-3, 10.0, log=True), Param("p", 1e-3, 1.0, log=True)),
        ),
        Entrant(
            "adahessian",
            "adahessian",
            "AdaHessian: Adam with the squared Hutchinson Hessian diagonal",
            (Param("lr", 1e-3, 1.0, log=True), _BETA1),
        ),
        Entrant(
            "lion",
            "lion",
            "Lion: the sign of interpolated momentum, one state buffer",
            (Param("lr", 1e-6, 0.1, log=True), Param("beta1", 0.5, 0.95, pair=("betas", 0, 0.99))),
        ),
        Entrant(
            "clion",
            "lion",
            "C-Lion: Lion stepping only where sign(c) agrees with g",
            (Param("lr", 1e-6, 0.1, log=True), Param("beta1", 0.5, 0.95, pair=("betas", 0, 0.99))),
            fixed={"cautious": True},
        ),
        Entrant(
            "lars",
            "lars",
            "LARS: momentum SGD with a trust ratio per weight matrix",
            (Param("lr", 1e-2, 1e3, log=True), _MOMENTUM),
        ),
        Entrant(
            "lamb",
            "lamb",
            "LAMB: Adam's direction with a trust ratio per tensor",
            (_ADAM_LR, _BETA1),
        ),
        Entrant(
            "algoperf_nadamw",
            "nadam",
            "AlgoPerf baseline: NAdamW, warm-up 2% then cosine, published setting",
            (Param("lr", ALGOPERF_NADAMW["lr"], ALGOPERF_NADAMW["lr"], log=True),),
            fixed={**_NADAMW_FIXED, "weight_decay": ALGOPERF_NADAMW["weight_decay"]},
            warmup_cosine=ALGOPERF_NADAMW["warmup_fraction"],
        ),
        Entrant(
            "algoperf_nadamw_tuned",
            "nadam",
            "AlgoPerf baseline recipe (NAdamW, warm-up 2% then cosine), tuned",
            (_ADAM_LR, Param("weight_decay", 1e-4, 1.0, log=True)),
            fixed=dict(_NADAMW_FIXED),
            warmup_cosine=ALGOPERF_NADAMW["warmup_fraction"],
        ),
        Entrant(
            "soap",
            "soap",
            "SOAP: Adam in the eigenbasis of Shampoo's per-matrix factors",
            (Param("lr", 1e-4, 1e-1, log=True),
             Param("beta1", 0.5, 0.95, pair=("betas", 0, 0.95))),
        ),
        Entrant(
            "shampoo",
            "shampoo",
            "Shampoo: Kronecker-factored inverse roots, grafted to momentum SGD's step size",
            (Param("lr", 1e-4, 1.0, log=True),
             Param("beta1", 0.5, 0.95, pair=("betas", 0, 0.999))),
            fixed={"preconditioning_compute_steps": 10},
        ),
        Entrant(
            "mars",
            "mars",
            "MARS: AdamW on a variance-reduced gradient (the previous gradient's correction)",
            (_ADAM_LR, Param("beta1", 0.5, 0.99, pair=("betas", 0, 0.99))),
            fixed={"optimize_1d": True},
        ),
        Entrant(
            "plain_shampoo",
            "plain_shampoo",
            "Shampoo's 2018 form: summed Kronecker statistics, no grafting",
            (Param("lr", 1e-4, 1.0, log=True), Param("momentum", 0.0, 0.9)),
        ),
    ]
    return {e.name: e for e in items}


ENTRANTS: dict[str, Entrant] = _entrants()
"""Every entrant by name."""

SEED_FAMILY: tuple[str, ...] = (
    "gd",
    "sgd",
    "momentum",
    "nesterov",
    "adagrad",
    "rmsprop",
    "adadelta",
    "adam",
)
"""The optimizer family of the seed articles, compared by default."""


def available_entrants() -> list[str]:
    """Names of all entrants, seeds' family first."""
    return list(ENTRANTS)


def get_entrant(name: str) -> Entrant:
    """Look up an entrant; an unknown name raises ``ValueError`` listing the valid names."""
    if not isinstance(name, str) or name not in ENTRANTS:
        raise ValueError(
            f"unknown optimizer {name!r}; valid names: {', '.join(available_entrants())}"
        )
    return ENTRANTS[name]
