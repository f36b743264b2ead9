"""``descentlab advise``: which optimizer and settings for a problem, measured within a budget.

Runs the advisor (a portfolio at defaults, range tests, successive halving,
diagnostics; see ``descentlab.advisor``) on a built-in problem (``--problem``)
or on your own task (``--task module:function`` or ``--task file.py:function``;
the function returns a dict with ``model_fn``, ``loss_fn``, ``train_data``,
``val_data``, ``steps`` and optionally ``metric``, ``higher_is_better``,
``batch_size``). Prints the recommendation and writes an offline
``report.html`` (and ``advice.json``) into ``--out``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from pathlib import Path
from typing import Any

from descentlab.commands import arguments as a

__all__ = ["register", "run", "load_task"]

TASK_KEYS = ("model_fn", "loss_fn", "train_data", "val_data", "steps")
OPTIONAL_KEYS = ("metric", "higher_is_better", "batch_size")


def _problem_names() -> list[str]:
    from descentlab.problems import available_problems

    return available_problems()


def _candidate_names() -> list[str]:
    from descentlab.advisor.portfolio import PORTFOLIO

    return [c.name for c in PORTFOLIO]


def _task_spec(text: str) -> str:
    module, sep, func = text.rpartition(":")
    if not sep or not module or not func.isidentifier():
        raise argparse.ArgumentTypeError(
            f"must be module:function or file.py:function, got {text!r}")
    return text


def register(subparsers: Any) -> None:
    """Add the ``advise`` sub-command."""
    p = subparsers.add_parser(
        "advise", help="choose an optimizer and its settings by measuring, within a budget",
        description=__doc__.split("\n\n")[1].replace("\n", " ").replace("``", ""))
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--problem", type=a.known_name(_problem_names, "problem"),
                      help="a built-in problem (`descentlab list problems`)")
    what.add_argument("--task", type=_task_spec, metavar="MODULE:FUNCTION",
                      help="a function returning your model_fn, loss_fn, data and steps")
    p.add_argument("--budget", type=a.fraction, default=0.2,
                   help="share of the training steps the advice may spend, in (0, 1] (0.2)")
    p.add_argument("--steps", type=a.positive_int,
                   help="training steps to advise for (default: the problem's or the task's)")
    p.add_argument("--seed", type=a.seed, default=0, help="seed (0)")
    p.add_argument("--candidates", type=a.name_list(_candidate_names, "candidate"),
                   metavar="NAMES", help="restrict the portfolio (default: all that apply)")
    p.add_argument("--out", type=a.output_folder, default=Path("descentlab-advise"),
                   help="folder for report.html and advice.json (descentlab-advise)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, requires=a.needs("matplotlib", "rich", "sklearn"))


def load_task(spec: str) -> dict[str, Any]:
    """Import ``module:function`` (or ``file.py:function``), call it, check what it returns."""
    target, _, func = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            if not Path(target).is_file():
                raise ValueError(f"argument --task: no such file {target!r}")
            module_spec = importlib.util.spec_from_file_location("descentlab_user_task", target)
            if module_spec is None or module_spec.loader is None:
                raise ValueError(f"argument --task: cannot load {target!r} as Python")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"argument --task: cannot import {target!r}: "
                         f"{type(exc).__name__}: {exc}") from None
    build = getattr(module, func, None)
    if not callable(build):
        raise ValueError(f"argument --task: {target!r} has no function {func!r}")
    try:
        pieces = build()
    except Exception as exc:
        raise ValueError(f"argument --task: {spec}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(pieces, dict):
        raise ValueError(f"argument --task: {spec}() must return a dict with keys "
                         f"{', '.join(TASK_KEYS)}; got {type(pieces).__name__}")
    missing = [k for k in TASK_KEYS if k not in pieces]
    unknown = [k for k in pieces if k not in TASK_KEYS + OPTIONAL_KEYS]
    if missing or unknown:
        raise ValueError(f"argument --task: {spec}() returned a dict "
                         + (f"without {', '.join(missing)}" if missing else "")
                         + ("; " if missing and unknown else "")
                         + (f"with unknown keys {', '.join(unknown)}" if unknown else "")
                         + f" (keys: {', '.join(TASK_KEYS)}; optional {', '.join(OPTIONAL_KEYS)})")
    return pieces


def _setup(args: argparse.Namespace) -> Any:
    from descentlab.advisor import from_pieces, from_problem
    from descentlab.problems import get_problem

    if args.problem is not None:
        return from_problem(get_problem(args.problem), steps=args.steps)
    pieces = load_task(args.task)
    if args.steps is not None:
        pieces["steps"] = args.steps
    try:
        return from_pieces(pieces.pop("model_fn"), pieces.pop("loss_fn"),
                           pieces.pop("train_data"), pieces.pop("val_data"), **pieces)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"argument --task: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Check the input, advise, print, write the report; returns the exit status."""
    from rich.console import Console
    from rich.progress import Progress

    from descentlab.advisor.method import MIN_EVALUATIONS, advise_setup
    from descentlab.advisor.report import foreign_files, write_atomically, write_html

    prog = "descentlab advise"
    theirs = foreign_files(args.out)
    if theirs:
        return a.fail(prog, f"argument --out: {args.out} holds {', '.join(theirs)} that "
                      "descentlab advise did not write; choose another folder")
    try:
        setup = _setup(args)
    except (ValueError, TypeError) as exc:
        return a.fail(prog, str(exc))
    total = int(args.budget * setup.steps + 1e-9)
    if total < MIN_EVALUATIONS:
        return a.fail(prog, f"argument --budget: {args.budget:g} × {setup.steps} steps = {total} "
                      f"gradient evaluations; the advisor needs at least {MIN_EVALUATIONS}")
    console = Console()
    with Progress(transient=True, disable=args.no_progress, console=console) as bar:
        task = bar.add_task(f"advising on {setup.name}", total=total)
        rec = advise_setup(setup, budget=args.budget, seed=args.seed,
                           candidates=args.candidates,
                           progress=lambda n: bar.advance(task, n))
    console.print(f"[bold]{rec.problem}[/bold]: [green]{rec.candidate}[/green] "
                  f"(optimizer {rec.optimizer!r}), lr {rec.lr:.4g}, confidence "
                  f"{rec.confidence:.2f} ({rec.confidence_label})")
    for reason in rec.reasons:
        console.print(f"  • {reason}", highlight=False)
    ev = rec.evidence
    console.print(f"spent {ev.total_spent} of {ev.budget} allowed gradient evaluations "
                  f"({ev.total_spent / rec.steps:.0%} of {rec.steps} steps): "
                  + ", ".join(f"{k} {v}" for k, v in ev.spent.items()), highlight=False)
    console.print("\n" + rec.code(), highlight=False, markup=False)
    out = Path(args.out)
    report = write_html(rec, out / "report.html")
    write_atomically(out / "advice.json", rec.to_json() + "\n")
    console.print(f"report: {report}", highlight=False)
    return 0


