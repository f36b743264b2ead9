"""Collect finished results from the store into summaries, a leaderboard and exports.

Per (problem, entrant), over the re-run seeds:

- final train/validation loss and accuracy: mean ± sample standard deviation
  (n − 1; 0 for a single seed), over the runs that did not diverge;
- steps to target: the *median* over seeds, where a seed that never reached
  the target counts as infinite (so the median is infinite unless more than
  half the seeds reached it); wall time to target likewise;
- optimizer state bytes and peak step memory (first seed, torch.profiler);
- the best setting, and the tuning trials (learning rate, value, state) for
  the learning-rate sensitivity curve.

The leaderboard ranks entrants by the AlgoPerf score on steps to target,
then by problems solved, then by name; these are exactly reproducible, so the
same command with the same seeds ranks the same way. It also shows the score
computed the same way on the median *training wall time* to target (AlgoPerf's
own measure), which charges costlier steps (full-batch GD, several closure
calls per step) for their cost; it depends on the machine and its load, so a
fresh run on another machine, or under other load, gives another time score.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from descentlab.bench.entrants import Entrant
from descentlab.bench.protocol import Protocol, best_trial
from descentlab.bench.runner import RunRecord
from descentlab.bench.scoring import performance_ratios, score
from descentlab.bench.store import ResultStore, json_safe

__all__ = ["UnitSummary", "Results", "collect", "mean_std", "median_time", "export"]

METRICS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "loss")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; 0 for one value) of the finite values."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    arr = np.asarray(finite, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def median_time(values: list[float | None]) -> float:
    """Median with ``None`` (never reached) as infinity; ``inf`` if half or more never reached."""
    arr = np.sort(np.asarray([math.inf if v is None else float(v) for v in values], dtype=float))
    if len(arr) == 0:
        return math.inf
    mid = len(arr) // 2
    return float(arr[mid]) if len(arr) % 2 else float((arr[mid - 1] + arr[mid]) / 2)


@dataclass
class UnitSummary:
    """Summary of one (problem, entrant); see the module docstring."""

    problem: str
    entrant: str
    hparams: dict[str, float]
    runs: list[RunRecord]
    trials: list[dict[str, Any]]
    final: dict[str, tuple[float, float]] = field(default_factory=dict)
    steps_to_target: float = math.inf
    time_to_target: float = math.inf
    reached: int = 0
    diverged: int = 0
    train_time: float = 0.0
    state_bytes: int | None = None
    peak_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (without the per-run records)."""
        return json_safe(
            {
                "problem": self.problem,
                "entrant": self.entrant,
                "hparams": self.hparams,
                "final": {k: {"mean": m, "std": s} for k, (m, s) in self.final.items()},
                "steps_to_target_median": self.steps_to_target,
                "time_to_target_median_s": self.time_to_target,
                "seeds_reached": self.reached,
                "seeds_diverged": self.diverged,
                "seeds": len(self.runs),
                "train_time_mean_s": self.train_time,
                "optimizer_state_bytes": self.state_bytes,
                "peak_step_bytes": self.peak_bytes,
                "tuning_trials": self.trials,
            }
        )


@dataclass
class Results:
    """Everything the report needs: summaries, scores, leaderboard rows."""

    problems: list[Any]
    entrants: list[Entrant]
    protocol: Protocol
    units: dict[tuple[str, str], UnitSummary]
    scores: dict[str, float]
    ratios: dict[str, dict[str, float]]
    leaderboard: list[dict[str, Any]]
    time_scores: dict[str, float] = field(default_factory=dict)
    time_ratios: dict[str, dict[str, float]] = field(default_factory=dict)


def _summarise(
    problem: Any, entrant: Entrant, trials: list[Any], runs: list[RunRecord]
) -> UnitSummary:
    best = best_trial(trials, problem.higher_is_better)
    trial_rows = [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value
            if t.value is not None
            else (list(t.intermediate_values.values())[-1] if t.intermediate_values else None),
            "params": dict(t.params),
            "steps_to_target": t.user_attrs.get("steps_to_target"),
            "diverged": bool(t.user_attrs.get("diverged", False)),
        }
        for t in trials
    ]
    unit = UnitSummary(
        problem=problem.name,
        entrant=entrant.name,
        hparams=dict(best.params) if best is not None else {},
        runs=runs,
        trials=trial_rows,
    )
    ok = [r for r in runs if not r.diverged]
    keys = [k for k in METRICS if any(r.final.get(k) is not None for r in runs)]
    unit.final = {k: mean_std([r.final.get(k) for r in ok]) for k in keys}
    unit.steps_to_target = median_time([r.steps_to_target for r in runs])
    unit.time_to_target = median_time([r.time_to_target for r in runs])
    unit.reached = sum(r.steps_to_target is not None for r in runs)
    unit.diverged = sum(r.diverged for r in runs)
    unit.train_time = float(np.mean([r.train_time for r in runs])) if runs else 0.0
    unit.state_bytes = runs[0].state_bytes if runs else None
    unit.peak_bytes = next((r.peak_bytes for r in runs if r.peak_bytes is not None), None)
    return unit


def collect(
    store: ResultStore, problems: list[Any], entrants: list[Entrant], protocol: Protocol
) -> Results:
    """Read the finished results of a comparison and score them."""
    units: dict[tuple[str, str], UnitSummary] = {}
    for p in problems:
        for e in entrants:
            trials = store.finished_trials(protocol.tuning_key(p, e))[: protocol.trials]
            by_seed = store.runs(protocol.runs_key(p, e))
            runs = [by_seed[s] for s in protocol.run_seeds if s in by_seed]
            units[(p.name, e.name)] = _summarise(p, e, trials, runs)
    def ratios_of(attribute: str) -> dict[str, dict[str, float]]:
        return performance_ratios({
            p.name: {e.name: getattr(units[(p.name, e.name)], attribute) for e in entrants}
            for p in problems
        })

    ratios, time_ratios = ratios_of("steps_to_target"), ratios_of("time_to_target")
    scores, time_scores = score(ratios), score(time_ratios)
    rows = []
    for e in entrants:
        solved = sum(math.isfinite(units[(p.name, e.name)].steps_to_target) for p in problems)
        row: dict[str, Any] = {
            "optimizer": e.name,
            "score": round(scores[e.name], 3),
            "time_score": round(time_scores[e.name], 3),
            "solved": solved,
        }
        for p in problems:
            u = units[(p.name, e.name)]
            row[p.name] = int(u.steps_to_target) if math.isfinite(u.steps_to_target) else None
        rows.append(row)
    rows.sort(key=lambda r: (-r["score"], -r["solved"], r["optimizer"]))
    rows = [{"rank": i, **row} for i, row in enumerate(rows, 1)]
    return Results(
        problems, entrants, protocol, units, scores, ratios, rows, time_scores, time_ratios
    )


def leaderboard_text(results: Results) -> str:
    """The leaderboard as a Markdown table (steps to target per problem; — = not reached).

    ``score`` is the AlgoPerf score on steps, ``time score`` the same on training
    wall time (machine-dependent).
    """
    names = [p.name for p in results.problems]
    head = ["rank", "optimizer", "score", "time score", "solved", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in results.leaderboard:
        cells = [
            str(row["rank"]),
            row["optimizer"],
            f"{row['score']:.3f}",
            f"{row['time_score']:.3f}",
            f"{row['solved']}/{len(names)}",
        ]
        cells += ["—" if row[n] is None else str(row[n]) for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def export(results: Results, out: Path, extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``results.json``, ``runs.csv``, ``trials.csv`` and ``leaderboard.csv`` to ``out``."""
    paths = {
        name: out / name for name in ("results.json", "runs.csv", "trials.csv", "leaderboard.csv")
    }
    payload = {
        "protocol": results.protocol.to_dict(),
        "problems": [
            {**json_safe(p.settings), "fingerprint": p.fingerprint()} for p in results.problems
        ],
        "entrants": [
            {"name": e.name, "optimizer": e.optimizer, "space": e.describe_space()}
            for e in results.entrants
        ],
        "leaderboard": results.leaderboard,
        "scores": results.scores,
        "time_scores": results.time_scores,
        "units": [u.to_dict() for u in results.units.values()],
        "runs": [
            {"problem": u.problem, "entrant": u.entrant, **json_safe(r.to_dict())}
            for u in results.units.values()
            for r in u.runs
        ],
        **(extra or {}),
    }
    _atomic_write(paths["results.json"], json.dumps(json_safe(payload), indent=1, default=str))
    metric_keys = list(METRICS)
    run_rows = [
        {
            "problem": u.problem,
            "optimizer": u.entrant,
            "seed": r.seed,
            **{f"final_{k}": r.final.get(k) for k in metric_keys},
            "steps_to_target": r.steps_to_target,
            "time_to_target_s": r.time_to_target,
            "train_time_s": r.train_time,
            "diverged": r.diverged,
            "optimizer_state_bytes": r.state_bytes,
            "peak_step_bytes": r.peak_bytes,
            "hparams": json.dumps(r.hparams, sort_keys=True),
        }
        for u in results.units.values()
        for r in u.runs
    ]
    trial_rows = [
        {
            "problem": u.problem,
            "optimizer": u.entrant,
            "trial": t["number"],
            "state": t["state"],
            "value": t["value"],
            "steps_to_target": t["steps_to_target"],
            "diverged": t["diverged"],
            "params": json.dumps(t["params"], sort_keys=True),
        }
        for u in results.units.values()
        for t in u.trials
    ]
    _write_csv(paths["runs.csv"], run_rows)
    _write_csv(paths["trials.csv"], trial_rows)
    _write_csv(paths["leaderboard.csv"], results.leaderboard)
    return paths


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    tmp.replace(path)
