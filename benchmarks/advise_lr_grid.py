"""How far the advisor's candidates at their defaults can go: a learning-rate grid per problem.

Each candidate of the portfolio (its defaults and schedule as the advice uses
them) trains for the problem's full budget at every rate of ``--lrs``; the
final metric is the mean over seeds 1–2, the seeds ``compare`` re-runs its
best settings on, or over ``--seeds`` (``3-12``: fresh ones; the JSON also
keeps each run's metric at ten points along it, as ``curves``). This bounds
what any choice of candidate and learning rate can reach without tuning other
hyperparameters — the explanation of the misses in the README's validation
table, not a tuning the advice uses.

    python benchmarks/advise_lr_grid.py --problems noisy_quadratic,breast_cancer_logreg

With ``--average`` every candidate with a cosine decay runs instead at a
constant rate after its warm-up, scored at the mean of its iterates over the
last half of the steps (the advice's tail averaging; ``Candidate.averaged``):
how the final metric depends on the rate with averaging instead of decay.

    python benchmarks/advise_lr_grid.py --average --tag average \
        --problems noisy_quadratic,breast_cancer_logreg,breast_cancer_svm,diabetes_linreg

With ``--lr-free`` it also trains the learning-rate-free optimizers (Prodigy,
D-Adaptation Adam and SGD) and the two Schedule-Free ones at their own default
rates, the first three with the advice's warm-up and cosine and with a constant
rate after the warm-up, the Schedule-Free ones with warm-up only (the
``lr_free_rows`` of the JSON): whether candidates without a range test would
leave room for a comparison at tiny budgets.

With ``--momenta 0.9,0.95,0.97,0.98,0.99`` it also trains Nesterov momentum SGD
at each of those momenta, with the advice's warm-up and cosine schedule and
with a constant rate after the warm-up (the ``momentum_rows`` of the JSON):
how far tuning the momentum, which the advice does not, would go. ``--tag``
names the JSON ``advise_lr_grid_<tag>.json``.

    python benchmarks/advise_lr_grid.py --problems breast_cancer_logreg \
        --momenta 0.9,0.95,0.97,0.98,0.99 --lrs 0.01,0.02,0.03,0.04,0.05,0.07,0.1,0.3 \
        --tag momentum

With ``--seeds 3-12`` the finals are means over seeds that neither the tuning
(0) nor its re-runs (1–2) used: whether two seeds made a candidate look better
than it is.

    python benchmarks/advise_lr_grid.py --problems breast_cancer_logreg --seeds 3-12 \
        --lrs 0.01,0.02,0.03,0.04,0.05,0.07,0.1,0.2,0.3 --tag fresh_seeds
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from descentlab.advisor.measure import Budget, short_run
from descentlab.advisor.portfolio import PORTFOLIO, Candidate, registry_name
from descentlab.advisor.setup import from_problem
from descentlab.commands import arguments as a
from descentlab.optim.registry import OPTIMIZERS
from descentlab.problems import available_problems, get_problem

RESULTS = Path(__file__).parent / "results"

LR_FREE = (("prodigy", ("warmup_cosine", "warmup")), ("dadapt_adam", ("warmup_cosine", "warmup")),
           ("dadapt_sgd", ("warmup_cosine", "warmup")), ("sgd_schedulefree", ("warmup",)),
           ("adamw_schedulefree", ("warmup",)))
"""``--lr-free``: optimizer and schedules, each at the optimizer's own default rate."""


def number_list(low: float, high: float, what: str) -> Callable[[str], list[float]]:
    """argparse type: comma-separated numbers in ``(low, high)``, at least one."""
    def parse(text: str) -> list[float]:
        try:
            values = [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            values = []
        if not values or not all(math.isfinite(v) and low < v < high for v in values):
            raise argparse.ArgumentTypeError(f"must be comma-separated {what}, got {text!r}")
        return values

    return parse


def seed_list(text: str) -> list[int]:
    """argparse type: comma-separated seeds or ranges ``a-b`` (``3-12``), none repeated."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            low, _, high = part.partition("-")
            seeds += range(int(low), int(high or low) + 1)
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(
            f"must be comma-separated seeds >= 0 or ranges a-b, none repeated, got {text!r}")
    return seeds


def seed_text(seeds: list[int]) -> str:
    """``1–2`` for a run of consecutive seeds, else the list."""
    consecutive = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    if consecutive and len(seeds) > 1:
        return f"{seeds[0]}–{seeds[-1]}"
    return ",".join(map(str, seeds))


def main() -> None:
    """Print the grid's table (best rate per candidate) and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=a.name_list(available_problems, "problem"),
                        default="noisy_quadratic,breast_cancer_logreg")
    parser.add_argument("--candidates", default="adamw,nadamw,momentum,lion,schedule_free",
                        type=a.name_list(lambda: [c.name for c in PORTFOLIO], "candidate"))
    parser.add_argument("--lrs", type=number_list(0, math.inf, "numbers > 0"),
                        default="0.001,0.003,0.01,0.03,0.1,0.3,1")
    parser.add_argument("--seeds", type=seed_list, default="1,2",
                        help="seeds the finals are means over (default 1,2, the seeds compare "
                        "re-runs on; 3-12: fresh ones)")
    parser.add_argument("--tag", default="", help="suffix of the JSON file's name")
    parser.add_argument("--average", action="store_true",
                        help="tail averaging at a constant rate instead of cosine decay")
    parser.add_argument("--lr-free", action="store_true",
                        help="also the learning-rate-free and Schedule-Free optimizers")
    parser.add_argument("--momenta", type=number_list(0, 1, "momenta in (0, 1)"), default=[],
                        help="also Nesterov SGD at these momenta (cosine and constant)")
    args = parser.parse_args()
    lrs, seeds = args.lrs, args.seeds
    load, start = os.getloadavg(), time.time()
    rows = []
    lines = [f"| problem | candidate | best lr | final (mean of seeds {seed_text(seeds)}) |",
             "|---|---|---:|---:|"]
    rate_lines = ["| problem | candidate | " + " | ".join(f"{lr:g}" for lr in lrs) + " |",
                  "|---|---|" + "---:|" * len(lrs)]
    lr_free_rows, lr_free_lines = [], ["| problem | optimizer | lr | schedule | final |",
                                       "|---|---|---:|---|---:|"]
    momentum_rows, momentum_lines = [], [
        "| problem | Nesterov momentum | schedule | " + " | ".join(f"{lr:g}" for lr in lrs)
        + " |", "|---|---:|---|" + "---:|" * len(lrs)]
    for name in args.problems:
        problem = get_problem(name)
        setup = from_problem(problem)

        def finals(cand: Candidate, setup=setup, steps=problem.steps,
                   curves: dict | None = None, rates: list[float] = lrs) -> dict[float, float]:
            found = {}
            for lr in rates:
                runs = [short_run(setup, cand, lr, steps, seed, Budget(steps)) for seed in seeds]
                found[lr] = statistics.fmean(r.final for r in runs)
                if curves is not None:  # the metric ten times along the run, mean of seeds
                    curves[lr] = [[points[0][0], statistics.fmean(v for _, v in points)]
                                  for points in zip(*(r.curve for r in runs), strict=False)]
            return found

        for cname in args.candidates:
            base = next(c for c in PORTFOLIO if c.name == cname)
            cand = base.resolved(registry_name(base))
            curves: dict[float, list] = {}
            found = finals(cand.averaged() if args.average else cand, curves=curves)
            best = (max if problem.higher_is_better else min)(found, key=found.get)
            rows.append({"problem": name, "candidate": cname, "finals": found, "best_lr": best,
                         "curves": curves})
            lines.append(f"| {name} | {cname} | {best:g} | {found[best]:.4g} |")
            rate_lines.append(f"| {name} | {cname} | "
                              + " | ".join(f"{found[lr]:.4g}" for lr in lrs) + " |")
        for opt, schedules in (LR_FREE if args.lr_free else ()):
            lr = inspect.signature(OPTIMIZERS[opt]).parameters["lr"].default
            for schedule in schedules:
                cand = Candidate(opt, (opt,), {}, None, schedule, opt, lr=lr, optimizer=opt)
                value = finals(cand, rates=[lr])[lr]
                lr_free_rows.append({"problem": name, "optimizer": opt, "lr": lr,
                                     "schedule": schedule, "final": value})
                lr_free_lines.append(f"| {name} | {opt} | {lr:g} | {schedule} | {value:.4g} |")
        for mu in args.momenta:
            for schedule in ("warmup_cosine", "warmup"):
                cand = Candidate(f"nesterov {mu:g}", ("sgd",), {"momentum": mu, "nesterov": True},
                                 (1e-3, 10.0), schedule, "Nesterov SGD", optimizer="sgd")
                found = finals(cand)
                momentum_rows.append({"problem": name, "momentum": mu, "schedule": schedule,
                                      "finals": found})
                momentum_lines.append(
                    f"| {name} | {mu:g} | {'cosine' if schedule == 'warmup_cosine' else 'constant'}"
                    " | " + " | ".join(f"{found[lr]:.4g}" for lr in lrs) + " |")
    table = "\n".join(lines)
    print(table + "\n\n" + "\n".join(rate_lines))
    if lr_free_rows:
        print("\n" + "\n".join(lr_free_lines))
    if momentum_rows:
        print("\n" + "\n".join(momentum_lines))
    RESULTS.mkdir(exist_ok=True)
    out = {"rows": rows, "table": table, "rate_table": "\n".join(rate_lines),
           "average": args.average, "seeds": seeds, "seconds": time.time() - start,
           "load_average_before": load, "load_average_after": os.getloadavg()}
    if lr_free_rows:
        out.update(lr_free_rows=lr_free_rows, lr_free_table="\n".join(lr_free_lines))
    if momentum_rows:
        out.update(momentum_rows=momentum_rows, momentum_table="\n".join(momentum_lines))
    name = "advise_lr_grid" + (f"_{args.tag}" if args.tag else "") + ".json"
    (RESULTS / name).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
