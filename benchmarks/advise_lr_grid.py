"""How far the advisor's candidates at their defaults can go: a learning-rate grid per problem.

Each candidate of the portfolio (its defaults and schedule as the advice uses
them) trains for the problem's full budget at every rate of ``--lrs``; the
final metric is the mean over seeds 1–2. This bounds what any choice of
candidate and learning rate can reach without tuning other hyperparameters —
the explanation of the misses in the README's validation table, not a tuning
the advice uses.

    python benchmarks/advise_lr_grid.py --problems noisy_quadratic,breast_cancer_logreg
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from descentlab.advisor.measure import Budget, short_run
from descentlab.advisor.portfolio import PORTFOLIO, registry_name
from descentlab.advisor.setup import from_problem
from descentlab.problems import get_problem

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    """Print the grid's table (best rate per candidate) and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", default="noisy_quadratic,breast_cancer_logreg")
    parser.add_argument("--candidates", default="adamw,nadamw,momentum,lion,schedule_free")
    parser.add_argument("--lrs", default="0.001,0.003,0.01,0.03,0.1,0.3,1")
    args = parser.parse_args()
    lrs = [float(x) for x in args.lrs.split(",")]
    load, start = os.getloadavg(), time.time()
    rows, lines = [], ["| problem | candidate | best lr | final (mean of seeds 1–2) |",
                       "|---|---|---:|---:|"]
    for name in args.problems.split(","):
        problem = get_problem(name)
        setup = from_problem(problem)
        for cname in args.candidates.split(","):
            base = next(c for c in PORTFOLIO if c.name == cname)
            cand = base.resolved(registry_name(base))
            finals = {lr: statistics.fmean(
                short_run(setup, cand, lr, problem.steps, seed, Budget(problem.steps)).final
                for seed in (1, 2)) for lr in lrs}
            best = (max if problem.higher_is_better else min)(finals, key=finals.get)
            rows.append({"problem": name, "candidate": cname, "finals": finals, "best_lr": best})
            lines.append(f"| {name} | {cname} | {best:g} | {finals[best]:.4g} |")
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    out = {"rows": rows, "table": table, "seconds": time.time() - start,
           "load_average_before": load, "load_average_after": os.getloadavg()}
    (RESULTS / "advise_lr_grid.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
