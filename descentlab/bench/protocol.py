"""The tuning protocol: Optuna search per (problem, entrant), then re-runs of the best setting.

For each problem and entrant (DESIGN.md section 5, after DeepOBS and AlgoPerf):

1. **Tuning.** ``trials`` settings are drawn from the entrant's search space by
   Optuna's TPE sampler (the first ``startup_trials`` at random). Each trial
   trains on the problem with data/initialisation seed ``seed`` and is scored
   by the problem's target metric (a validation metric for learning
   problems) at the end of the step budget; a run that diverges scores the
   worst possible value (``±inf``). The median pruner may stop a trial whose
   intermediate metric is worse than the median of earlier trials at the same
   step (after ``startup_trials`` complete trials and the first quarter of
   the budget); pruned trials count toward the budget.
2. **Re-runs.** The best complete trial (ties: the earlier trial) is re-run on
   seeds ``seed + 1 … seed + seeds``; these runs give every reported metric.

Work items and determinism: the work of one (problem, entrant) — a *unit* —
is a sequence of items: tuning *slot* ``n`` for ``n < trials``, then one item
per re-run seed. Slot ``n`` is sampled by a ``TPESampler`` seeded with a hash
of the problem, the search space, the base seed and ``n``, from the finished
slots ``0 … n−1``, and becomes ready only when they are all finished; the
re-runs become ready (all at once) when tuning is finished. What an item
computes therefore depends only on finished results, never on which process
runs it, when, or what else is running: an interrupted and resumed run, a run
with any number of worker processes and a sweep shared by any number of
machines all draw exactly the settings and get exactly the results of one
uninterrupted process, and raising ``trials`` later extends a study instead of
starting it again. Which process runs an item is decided by claims in the
database (:mod:`descentlab.bench.claims`); each finished slot records its
number (``slot`` attribute), and a slot finished twice counts once.

Results are keyed by the problem's fingerprint, the entrant's search space,
the protocol's settings and the descentlab and torch versions (study names,
:meth:`Protocol.tuning_key`), so results of different code are never mixed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from descentlab.bench.claims import ClaimBoard
from descentlab.bench.entrants import Entrant
from descentlab.bench.runner import RunRecord, StopRun, run
from descentlab.bench.store import ResultStore, code_versions

__all__ = [
    "Protocol",
    "Unit",
    "Item",
    "versions_tag",
    "best_trial",
    "objective",
    "ready_items",
    "still_ready",
    "run_item",
    "unit_done",
    "unit_total",
]


def versions_tag() -> str:
    """``dl=<descentlab version>:torch=<torch version>``: part of every results key."""
    versions = code_versions()
    return f"dl={versions['descentlab']}:torch={versions['torch']}"


@dataclass(frozen=True)
class Protocol:
    """The benchmark protocol's settings (all part of the results' keys).

    Attributes:
        trials: tuning budget per problem and entrant (Optuna trials).
        seeds: how many seeds the best setting is re-run on.
        seed: base seed: tuning runs use it; re-runs use ``seed+1 … seed+seeds``.
        startup_trials: random trials before TPE models the history; also the
            number of complete trials before the pruner may prune.
        prune: allow median pruning.
    """

    trials: int = 12
    seeds: int = 3
    seed: int = 0
    startup_trials: int = 4
    prune: bool = True

    def __post_init__(self) -> None:
        for name, minimum in (("trials", 1), ("seeds", 1), ("seed", 0), ("startup_trials", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

    @property
    def run_seeds(self) -> list[int]:
        """Seeds of the re-runs."""
        return [self.seed + 1 + i for i in range(self.seeds)]

    def tuning_key(self, problem: Any, entrant: Entrant) -> str:
        """Name of the tuning study: problem and entrant versions, the sampler settings and the
        code's versions."""
        return (
            f"tune:{problem.name}@{problem.fingerprint()}:{entrant.name}@{entrant.space_hash()}"
            f":seed={self.seed}:startup={self.startup_trials}:prune={int(self.prune)}"
            f":{versions_tag()}"
        )

    def runs_key(self, problem: Any, entrant: Entrant) -> str:
        """Name of the re-runs study (depends on the trial budget, which picks the best)."""
        return (
            self.tuning_key(problem, entrant).replace("tune:", "runs:", 1)
            + f":trials={self.trials}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Settings as a plain dict."""
        return asdict(self)


def direction(problem: Any) -> str:
    """Optuna direction of the problem's metric."""
    return "maximize" if problem.higher_is_better else "minimize"


def objective(problem: Any, record: RunRecord) -> float:
    """The value a run scores: its final target metric; a diverged run scores the worst."""
    worst = -math.inf if problem.higher_is_better else math.inf
    value = record.final.get(problem.metric)
    if record.diverged or value is None or not math.isfinite(value):
        return worst
    return float(value)


def _sampler_seed(key: str, number: int) -> int:
    return int(hashlib.sha256(f"{key}#{number}".encode()).hexdigest()[:8], 16)


def best_trial(trials: list[FrozenTrial], higher_is_better: bool) -> FrozenTrial | None:
    """Best complete trial; ties go to the earlier trial."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        return None
    sign = -1.0 if higher_is_better else 1.0
    return min(complete, key=lambda t: (sign * t.value, t.number))


@dataclass(frozen=True)
class Unit:
    """The work of one (problem, entrant) under a protocol."""

    problem: Any
    entrant: Entrant
    protocol: Protocol

    @property
    def label(self) -> str:
        """``problem/entrant``."""
        return f"{self.problem.name}/{self.entrant.name}"

    @property
    def tuning_key(self) -> str:
        """Name of the tuning study."""
        return self.protocol.tuning_key(self.problem, self.entrant)

    @property
    def runs_key(self) -> str:
        """Name of the re-runs study."""
        return self.protocol.runs_key(self.problem, self.entrant)

    @property
    def cost(self) -> int:
        """Rough cost of one item, to start big work first: steps, learning problems weigh
        more, and a full-batch step on a mini-batch problem many mini-batch steps."""
        cost = int(self.problem.steps) * (5 if self.problem.kind == "learning" else 1)
        if self.entrant.full_batch and getattr(self.problem, "batch_size", None) is not None:
            cost *= 20
        return cost


@dataclass(frozen=True)
class Item:
    """One work item: tuning slot ``number`` (``kind="tune"``) or re-run seed ``number``."""

    unit: Unit
    kind: str
    number: int

    @property
    def study(self) -> str:
        """The study the item's result goes to (also the claim's key)."""
        return self.unit.tuning_key if self.kind == "tune" else self.unit.runs_key


def ready_items(store: ResultStore, unit: Unit) -> list[Item] | None:
    """Items of ``unit`` that can run now (all finished before them); ``None`` when done."""
    protocol = unit.protocol
    finished = store.finished_trials(unit.tuning_key)
    if len(finished) < protocol.trials:
        return [Item(unit, "tune", len(finished))]
    done = store.runs(unit.runs_key)
    missing = [Item(unit, "run", s) for s in protocol.run_seeds if s not in done]
    return missing or None


def still_ready(store: ResultStore, item: Item) -> bool:
    """Whether ``item`` is still unfinished and ready (checked again once it is claimed).

    A process reads what is ready, then claims it; in between, the previous
    owner may have saved the item and released its claim. Checking again while
    holding the claim closes that gap: results are saved before claims go.
    """
    if item.kind == "tune":
        return len(store.finished_trials(item.study)) == item.number
    return item.number not in store.runs(item.study)


def run_item(store: ResultStore, item: Item, board: ClaimBoard) -> bool:
    """Run ``item``, claimed on ``board``, and save its result if the claim is still ours.

    Returns whether the result was saved. A tuning trial that is not saved is
    marked failed (it never counts).
    """
    if item.kind == "tune":
        return _tune_slot(store, item, board)
    return _rerun_seed(store, item, board)


def _pruner(problem: Any, protocol: Protocol) -> optuna.pruners.BasePruner:
    if not protocol.prune:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=protocol.startup_trials, n_warmup_steps=problem.steps // 4
    )


def _tune_slot(store: ResultStore, item: Item, board: ClaimBoard) -> bool:
    unit, slot = item.unit, item.number
    problem, entrant, protocol = unit.problem, unit.entrant, unit.protocol
    seed_key = f"{problem.fingerprint()}:{entrant.search_hash()}:{protocol.seed}"
    # about ten pruning checks per trial (each is a database write)
    report_every = max(1, problem.eval_every * math.ceil(problem.steps / problem.eval_every / 10))
    study = store.study(unit.tuning_key, direction(problem), pruner=_pruner(problem, protocol))
    study.sampler = optuna.samplers.TPESampler(
        seed=_sampler_seed(seed_key, slot),
        n_startup_trials=protocol.startup_trials,
        constant_liar=False,  # unfinished trials must not change what is sampled
    )
    trial = study.ask()
    lost = False

    def on_eval(step: int, value: float) -> None:
        nonlocal lost
        if math.isfinite(value) and (step % report_every == 0 or step == problem.steps):
            try:
                trial.report(value, step)
                prune = trial.should_prune()
            except optuna.exceptions.UpdateFinishedTrialError:
                lost = True  # failed by a process that took this slot over
                raise StopRun from None
            if prune:
                raise StopRun

    try:
        trial.set_user_attr("slot", slot)
        sampled = entrant.suggest(trial)
        record = run(problem, entrant, sampled, protocol.seed, on_eval=on_eval)
        trial.set_user_attr("steps_to_target", record.steps_to_target)
        trial.set_user_attr("diverged", record.diverged)
        if lost or not board.confirm(item.study, slot):  # taken over: the other result counts
            study.tell(trial, state=TrialState.FAIL)
            return False
        if record.extra.get("stopped"):
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, objective(problem, record))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # the trial was failed by a process that took this slot over
    return True


def _rerun_seed(store: ResultStore, item: Item, board: ClaimBoard) -> bool:
    unit, seed = item.unit, item.number
    problem, entrant, protocol = unit.problem, unit.entrant, unit.protocol
    trials = store.finished_trials(unit.tuning_key)[: protocol.trials]
    best = best_trial(trials, problem.higher_is_better)
    if best is None:  # every trial pruned: cannot happen with startup trials, but be safe
        best = trials[0]
    sampled = {p.name: best.params[p.name] for p in entrant.space}
    first = seed == protocol.run_seeds[0]
    record = run(
        problem, entrant, sampled, seed, measure_memory=first, record_trajectory=True
    )
    if not board.confirm(item.study, seed):
        return False
    store.add_run(unit.runs_key, direction(problem), record, objective(problem, record))
    return True


def unit_total(protocol: Protocol) -> int:
    """Work items (trials plus re-runs) of one (problem, entrant)."""
    return protocol.trials + protocol.seeds


def unit_done(store: ResultStore, unit: Unit) -> int:
    """Work items of ``unit`` already finished in the store."""
    protocol = unit.protocol
    trials = min(len(store.finished_trials(unit.tuning_key)), protocol.trials)
    runs = store.runs(unit.runs_key)
    return trials + sum(1 for s in protocol.run_seeds if s in runs)
