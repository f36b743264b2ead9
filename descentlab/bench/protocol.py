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

Reproducibility and resumption: trial ``n`` of a study is sampled by a
``TPESampler`` seeded with a hash of the problem, the search space, the base
seed and ``n``, from the
finished trials ``0 … n−1``. A trial's setting therefore depends only on the
finished history, so an interrupted and resumed run draws exactly the
settings an uninterrupted one would, and raising ``trials`` later extends a
study instead of starting it again.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from descentlab.bench.entrants import Entrant
from descentlab.bench.runner import RunRecord, StopRun, run
from descentlab.bench.store import ResultStore

__all__ = ["Protocol", "tune", "rerun", "run_unit", "best_trial", "objective", "unit_total"]


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
        """Name of the tuning study: problem and entrant versions plus the sampler settings."""
        return (
            f"tune:{problem.name}@{problem.fingerprint()}:{entrant.name}@{entrant.space_hash()}"
            f":seed={self.seed}:startup={self.startup_trials}:prune={int(self.prune)}"
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


def tune(
    store: ResultStore,
    problem: Any,
    entrant: Entrant,
    protocol: Protocol,
    progress: Callable[[], None] | None = None,
) -> list[FrozenTrial]:
    """Run the missing tuning trials of one (problem, entrant); return the first ``trials``."""
    key = protocol.tuning_key(problem, entrant)
    seed_key = f"{problem.fingerprint()}:{entrant.search_hash()}:{protocol.seed}"
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(
            n_startup_trials=protocol.startup_trials, n_warmup_steps=problem.steps // 4
        )
        if protocol.prune
        else optuna.pruners.NopPruner()
    )
    # about ten pruning checks per trial (each is a database write)
    report_every = max(1, problem.eval_every * math.ceil(problem.steps / problem.eval_every / 10))
    study = store.study(key, direction(problem), pruner=pruner)
    while True:
        finished = store.finished_trials(key)
        if len(finished) >= protocol.trials:
            return finished[: protocol.trials]
        study.sampler = optuna.samplers.TPESampler(
            seed=_sampler_seed(seed_key, len(finished)),
            n_startup_trials=protocol.startup_trials,
            constant_liar=False,  # unfinished trials must not change what is sampled
        )
        trial = study.ask()
        sampled = entrant.suggest(trial)

        def on_eval(step: int, value: float, trial: optuna.Trial = trial) -> None:
            if math.isfinite(value) and (step % report_every == 0 or step == problem.steps):
                trial.report(value, step)
                if trial.should_prune():
                    raise StopRun

        record = run(problem, entrant, sampled, protocol.seed, on_eval=on_eval)
        trial.set_user_attr("steps_to_target", record.steps_to_target)
        trial.set_user_attr("diverged", record.diverged)
        if record.extra.get("stopped"):
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, objective(problem, record))
        if progress is not None:
            progress()


def rerun(
    store: ResultStore,
    problem: Any,
    entrant: Entrant,
    protocol: Protocol,
    trials: list[FrozenTrial],
    progress: Callable[[], None] | None = None,
) -> dict[int, RunRecord]:
    """Re-run the best of ``trials`` on the protocol's seeds (missing seeds only)."""
    best = best_trial(trials, problem.higher_is_better)
    if best is None:  # every trial pruned: cannot happen with startup trials, but be safe
        best = trials[0]
    sampled = {p.name: best.params[p.name] for p in entrant.space}
    key = protocol.runs_key(problem, entrant)
    done = store.runs(key)
    for i, seed in enumerate(protocol.run_seeds):
        if seed in done:
            continue
        record = run(
            problem, entrant, sampled, seed, measure_memory=(i == 0), record_trajectory=True
        )
        store.add_run(key, direction(problem), record, objective(problem, record))
        if progress is not None:
            progress()
    return store.runs(key)


def unit_total(protocol: Protocol) -> int:
    """Work items (trials plus re-runs) of one (problem, entrant)."""
    return protocol.trials + protocol.seeds


def unit_done(store: ResultStore, problem: Any, entrant: Entrant, protocol: Protocol) -> int:
    """Work items of one (problem, entrant) already finished in the store."""
    trials = min(len(store.finished_trials(protocol.tuning_key(problem, entrant))), protocol.trials)
    runs = store.runs(protocol.runs_key(problem, entrant))
    return trials + sum(1 for s in protocol.run_seeds if s in runs)


def run_unit(
    store: ResultStore,
    problem: Any,
    entrant: Entrant,
    protocol: Protocol,
    progress: Callable[[], None] | None = None,
) -> None:
    """Tune then re-run one (problem, entrant), doing only what the store lacks."""
    trials = tune(store, problem, entrant, protocol, progress)
    rerun(store, problem, entrant, protocol, trials, progress)
