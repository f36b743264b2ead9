"""``descentlab visualize``: trajectories of optimizers on a 2-D test function.

Runs each optimizer from the function's canonical start and writes, into
``--out``, a still PNG, an animated GIF and a self-contained HTML animation of
the paths over the function's contours, plus the paths as JSON. Unless a
learning rate is given, each optimizer's is the best of a log-spaced grid
(scored on the whole path: mean log-suboptimality), so the methods are shown
at a good setting of their own.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
from pathlib import Path
from typing import Any

from descentlab.commands import arguments as a

__all__ = ["register", "parse_optimizer_spec", "run"]

DEFAULT_OPTIMIZERS = "sgd,momentum,adagrad,rmsprop,adadelta,adam"
FORMATS = ("png", "gif", "html")


def parse_optimizer_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Parse ``NAME[:key=value[:key=value...]]``, e.g. ``sgd:momentum=0.5:lr=0.01``.

    Values are Python literals (numbers, booleans, tuples). Returns the name and
    the keyword arguments; a malformed part raises ``ValueError`` naming it.
    """
    name, *parts = spec.strip().split(":")
    if not name:
        raise ValueError(f"empty optimizer name in {spec!r}")
    hparams: dict[str, Any] = {}
    for part in parts:
        key, sep, text = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value in optimizer spec {spec!r}, got {part!r}")
        try:
            hparams[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f"value of {key.strip()!r} in {spec!r} is not a literal: "
                             f"{text!r}") from None
    return name, hparams


def _point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be two numbers 'x,y', got {text!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise argparse.ArgumentTypeError(f"must be two finite numbers 'x,y', got {text!r}")
    return x, y


def _function_names() -> list[str]:
    from descentlab.problems.analytic import FUNCTIONS

    return list(FUNCTIONS)


def _optimizer_specs(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``--optimizers``: parse every spec and check its name and arguments now."""
    import descentlab
    from descentlab import checks
    from descentlab.optim.presets import PRESETS
    from descentlab.problems.trajectory import named_optimizer

    valid = [*descentlab.available_optimizers(), *PRESETS]
    try:
        specs = [parse_optimizer_spec(s) for s in text.split(",") if s.strip()]
        if not specs:
            raise ValueError(f"must name at least one optimizer, got {text!r}")
        for name, hparams in specs:
            checks.check_known(name, valid, "optimizer", ignore_case=True)
            named_optimizer(name, **hparams)  # unknown arguments and bad values fail here
    except (ValueError, TypeError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return specs


def register(subparsers: Any) -> None:
    """Add the ``visualize`` sub-command."""
    parser = subparsers.add_parser(
        "visualize",
        help="draw optimizer trajectories on a 2-D test function (PNG, GIF, HTML)",
        description=" ".join(__doc__.split("\n\n")[1].split()),
    )
    parser.add_argument("--function", default="rosenbrock", metavar="NAME",
                        type=a.known_name(_function_names, "function"),
                        help="2-D function (default rosenbrock; see `descentlab list`)")
    parser.add_argument("--optimizers", default=DEFAULT_OPTIMIZERS, metavar="SPECS",
                        type=_optimizer_specs,
                        help="comma-separated NAME[:key=value...] specs, e.g. "
                             f"'adam,sgd:momentum=0.5' (default {DEFAULT_OPTIMIZERS})")
    parser.add_argument("--steps", type=a.positive_int, default=300, metavar="N",
                        help="optimizer steps (default 300)")
    parser.add_argument("--lr", type=a.positive_float, default=None,
                        help="one learning rate for every optimizer without lr= in its spec "
                             "(default: tune each on a log grid 1e-4..10, scoring the whole path)")
    parser.add_argument("--start", type=_point, default=None, metavar="X,Y",
                        help="starting point (default: the function's canonical start)")
    parser.add_argument("--formats", default="png,gif,html", metavar="LIST",
                        type=a.name_list(lambda: FORMATS, "format"),
                        help="outputs among png,gif,html (default all three)")
    parser.add_argument("--frames", type=a.int_at_least(2), default=60, metavar="N",
                        help="frames of the GIF (default 60)")
    parser.add_argument("--out", default="descentlab-visualize", metavar="DIR",
                        type=a.output_folder,
                        help="output folder (default ./descentlab-visualize)")
    parser.set_defaults(func=run, requires=a.needs("matplotlib", "rich"))


def run(args: argparse.Namespace) -> int:
    """Run the command (arguments were checked when parsed); returns the exit code."""
    from descentlab.problems.analytic import get_function
    from descentlab.problems.trajectory import named_optimizer, run_trajectory, tune_learning_rate

    fn = get_function(args.function)
    specs, formats, out = args.optimizers, args.formats, args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return a.fail("descentlab visualize", f"argument --out: cannot create {str(out)!r}: "
                      f"{err.strerror or err}")

    from rich.progress import track

    trajectories, rows = {}, []
    for name, hparams in track(specs, description=f"{fn.name}: running optimizers"):
        hparams = dict(hparams)
        if "lr" not in hparams:
            if args.lr is not None:
                hparams["lr"] = args.lr
            else:
                hparams["lr"] = tune_learning_rate(fn.name, name, args.steps, **hparams)
        label = name + "".join(f" {k}={v:.3g}" if isinstance(v, float) else f" {k}={v}"
                               for k, v in hparams.items())
        path = run_trajectory(fn.name, named_optimizer(name, **hparams), args.steps, args.start)
        trajectories[label] = path
        rows.append((label, path))

    written = _write(fn, trajectories, formats, out, args.frames)
    _print_table(fn, rows)
    for path in written:
        print(f"wrote {path}")
    return 0


def _write(fn: Any, trajectories: dict, formats: list[str], out: Path, frames: int) -> list[Path]:
    from descentlab.problems.visualize import animate_trajectories, plot_trajectories

    written = []
    if "png" in formats:
        fig = plot_trajectories(fn, trajectories)
        fig.savefig(out / f"{fn.name}.png", dpi=110)
        written.append(out / f"{fn.name}.png")
    if "gif" in formats:
        written.append(animate_trajectories(fn, trajectories, out / f"{fn.name}.gif",
                                            frames=frames))
    if "html" in formats:
        written.append(animate_trajectories(fn, trajectories, out / f"{fn.name}.html"))
    data = {
        "function": fn.name,
        "formula": fn.formula,
        "trajectories": {k: [[None if not math.isfinite(v) else v for v in p] for p in
                             path.tolist()] for k, path in trajectories.items()},
    }
    (out / f"{fn.name}.json").write_text(json.dumps(data), encoding="utf-8")
    written.append(out / f"{fn.name}.json")
    return written


def _print_table(fn: Any, rows: list) -> None:
    import numpy as np
    import torch

    width = max(len(label) for label, _ in rows)
    print(f"{'optimizer':<{width}}  {'final f':>12}  {'to nearest minimum':>18}")
    for label, path in rows:
        last = path[-1]
        if not np.isfinite(last).all():
            print(f"{label:<{width}}  {'diverged':>12}  {'':>18}")
            continue
        value = float(fn(torch.tensor(last, dtype=torch.float64)))
        if fn.minima:
            dist = f"{min(float(np.hypot(*(last - np.array(m)))) for m in fn.minima):.4g}"
        else:
            dist = "— (unbounded)"
        print(f"{label:<{width}}  {value:>12.4g}  {dist:>18}")
