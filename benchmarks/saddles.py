"""What each method does at the saddles of seed 001: x^2 - y^2 and the monkey saddle x^3 - 3xy^2.

Each method starts at the saddle point (0, 0) and at a point near it, and runs
for at most 200 iterations or until ``f < -10`` (escaped: both functions are
unbounded below). Prints a markdown table (end point, f, closure calls, verdict),
writes JSON and a picture of the paths on the contours (default
``benchmarks/results/saddles.{json,png}``)::

    .venv/bin/python benchmarks/saddles.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from descentlab.second_order import LBFGS, LineSearchGD, NewtonCG, NonlinearCG, PerturbedGD

torch.set_default_dtype(torch.float64)


def saddle(p: torch.Tensor) -> torch.Tensor:
    return p[0] ** 2 - p[1] ** 2


def monkey(p: torch.Tensor) -> torch.Tensor:
    return p[0] ** 3 - 3 * p[0] * p[1] ** 2


#: name -> (function, start near the saddle, PerturbedGD radius)
FUNCTIONS = {
    "x^2 - y^2": (saddle, [0.1, 1e-3], 1e-2),
    "monkey x^3 - 3xy^2": (monkey, [0.5, 0.0], 0.5),
}


def methods(radius: float):
    return {
        "GD (torch SGD, lr 0.05)": lambda ps: torch.optim.SGD(ps, lr=0.05),
        "LineSearchGD (Armijo)": lambda ps: LineSearchGD(ps),
        "LBFGS (strong Wolfe)": lambda ps: LBFGS(ps, max_iter=1, line_search_fn="strong_wolfe"),
        "NonlinearCG (PR+)": lambda ps: NonlinearCG(ps, max_iter=1),
        "NewtonCG (line search)": lambda ps: NewtonCG(ps, max_iter=1),
        "NewtonCG (trust region)": lambda ps: NewtonCG(ps, max_iter=1, trust_region=True),
        f"PerturbedGD (lr 0.05, r {radius:g})": lambda ps: PerturbedGD(ps, lr=0.05, radius=radius,
                                                                        seed=0),
    }


def run(fn, make, start, iters=200):
    p = torch.tensor(start, requires_grad=True)
    opt = make([p])
    calls = [0]

    def closure():
        calls[0] += 1
        if isinstance(opt, torch.optim.SGD):
            opt.zero_grad()
            loss = fn(p)
            loss.backward()
            return loss
        return fn(p)

    path = [p.detach().clone()]
    for _ in range(iters):
        opt.step(closure)
        path.append(p.detach().clone())
        if float(fn(p.detach())) < -10:
            break
    end = p.detach()
    f = float(fn(end))
    if f < -10:
        verdict = "escapes"
    elif float(end.norm()) == 0.0:
        verdict = "stays at the saddle"
    elif float(end.norm()) < float(torch.tensor(start).norm()):
        verdict = "drawn towards the saddle"
    else:
        verdict = "moves away slowly"
    return {"end": end.tolist(), "f": f, "calls": calls[0], "iterations": len(path) - 1,
            "verdict": verdict, "path": torch.stack(path).tolist()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    results = {}
    print("| function | start | method | end point | f | closure calls | verdict |")
    print("|---|---|---|---|---|---|---|")
    for fname, (fn, near, radius) in FUNCTIONS.items():
        for start in ([0.0, 0.0], near):
            for mname, make in methods(radius).items():
                r = run(fn, make, start)
                results[f"{fname} | {start} | {mname}"] = r
                end = ", ".join(f"{v:.3g}" for v in r["end"])
                print(f"| {fname} | ({start[0]:g}, {start[1]:g}) | {mname} | ({end}) | "
                      f"{r['f']:.3g} | {r['calls']} | {r['verdict']} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "saddles.json").write_text(json.dumps(results, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return 0
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, (fname, (fn, near, _)) in zip(axes, FUNCTIONS.items(), strict=True):
        grid = torch.linspace(-1.5, 1.5, 200)
        xx, yy = torch.meshgrid(grid, grid, indexing="xy")
        ax.contour(xx, yy, fn(torch.stack([xx, yy])), levels=30, cmap="gray", linewidths=0.6)
        for key, r in results.items():
            if key.startswith(fname) and str(near) in key:
                path = torch.tensor(r["path"])
                ax.plot(path[:, 0], path[:, 1], ".-", ms=2, label=key.split(" | ")[-1])
        ax.set(xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), title=f"{fname}, start {tuple(near)}")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(args.out / "saddles.png", dpi=110)
    print(f"\nwrote {args.out / 'saddles.json'} and {args.out / 'saddles.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
