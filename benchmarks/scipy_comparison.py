"""Our second-order optimizers against scipy.optimize, row by row.

Problems: Rosenbrock 2-D and 100-D, Beale, a 100-D quadratic with condition
number 1e4, L2-regularised logistic regression on scikit-learn's breast-cancer
data (all float64). Pairs: ``LBFGS`` vs L-BFGS-B (both with memory 10),
``NewtonCG`` vs Newton-CG, ``NonlinearCG`` (PR+) vs CG.

Goal per row: reach the minimum, ``|f - f*| <= 1e-8 max(1, |f*|)``, with no more
than 1.5x scipy's function+gradient evaluations. ``evals`` counts evaluations
(one closure call / one scipy ``fun`` call, each giving f and its gradient)
until the first one that meets the target; ``total`` is what each method used
before its own stopping rule; Hessian-vector products are reported separately
(Newton-CG only). See ``benchmarks/scipy_check.py`` for the details.

Prints the table (markdown) and writes JSON (default
``benchmarks/results/scipy_comparison.json``)::

    .venv/bin/python benchmarks/scipy_comparison.py [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import scipy
import torch
from rich.progress import Progress
from scipy_check import EVAL_RATIO, PAIRS, TOLERANCE, compare, problems

HEADER = ("problem", "method", "ours f", "scipy f", "\\|f-f*\\| check", "our evals",
          "scipy evals", "ratio", "pass")


def fmt_f(value: float) -> str:
    return f"{value:.10g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "scipy_comparison.json")
    args = parser.parse_args()

    probs = problems()
    rows = []
    start = time.perf_counter()
    with Progress(transient=True) as progress:
        task = progress.add_task("comparing", total=len(probs) * len(PAIRS))
        for problem in probs:
            for method, _ in PAIRS:
                rows.append(compare(problem, method))
                progress.advance(task)
    elapsed = time.perf_counter() - start

    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        err = abs(r.ours_f - r.f_star)
        bound = TOLERANCE * max(1, abs(r.f_star))
        check = f"{err:.1e} {'<=' if r.ours_reached else '>'} {bound:.0e}"
        ratio = "n/a" if math.isinf(r.ratio) else f"{r.ratio:.2f}"
        lines.append("| " + " | ".join([
            r.problem, f"{r.method} / {r.scipy_method}", fmt_f(r.ours_f), fmt_f(r.scipy_f),
            check, str(r.ours_evals), str(r.scipy_evals), ratio,
            "yes" if r.passed else "**no**",
        ]) + " |")
    print("\n".join(lines))
    print()
    hvp_rows = [r for r in rows if r.method == "NewtonCG"]
    print("| problem | our evals (total) | scipy evals (total) | our HVPs | scipy HVPs |")
    print("|---|---|---|---|---|")
    for r in hvp_rows:
        print(f"| {r.problem} | {r.ours_total_evals} | {r.scipy_total_evals} | {r.ours_hvps} | "
              f"{r.scipy_hvps} |")
    passed = sum(r.passed for r in rows)
    print(f"\n{passed}/{len(rows)} rows within the goal (ratio <= {EVAL_RATIO}); "
          f"{elapsed:.1f} s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "goal": {"tolerance": TOLERANCE, "eval_ratio": EVAL_RATIO},
        "environment": {"torch": torch.__version__, "scipy": scipy.__version__,
                        "python": platform.python_version()},
        "rows": [r.as_dict() for r in rows],
    }
    args.out.write_text(json.dumps(payload, indent=2, default=float))
    print(f"wrote {args.out}")
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
