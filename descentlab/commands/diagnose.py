"""``descentlab diagnose``: train a problem under the monitor and report what is wrong.

Built-in problem: an MLP of ``--depth`` layers on scikit-learn's digits.
Your own problem: ``--problem path/to/file.py:build`` where ``build()``
returns a :class:`descentlab.diagnostics.run.DiagnoseProblem`.

Examples::

    descentlab diagnose --depth 30 --init normal          # vanishing gradients
    descentlab diagnose --depth 30 --init kaiming_normal  # trains
    descentlab diagnose --optimizer sgd --lr 1.0          # divergence
    descentlab diagnose --lr-find --html report.html --json findings.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from descentlab.commands import arguments as a

__all__ = ["register", "run"]


def _hparam(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"must look like KEY=VALUE, got {text!r}")
    key = key.strip()
    low = value.lower()
    if low in ("true", "false"):
        return key, low == "true"
    try:
        return key, int(value)
    except ValueError:
        pass
    try:
        return key, float(value)
    except ValueError:
        return key, value


def _optimizer_names() -> list[str]:
    from descentlab.diagnostics.run import optimizer_names

    return optimizer_names()


def _problem_spec(text: str) -> str:
    path, _, func = text.rpartition(":")
    if not path or not func.isidentifier():
        raise argparse.ArgumentTypeError(f"must be FILE.py:FUNCTION, got {text!r}")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"no such file {path!r} (in {text!r})")
    return text


def register(subparsers: Any) -> None:
    """Add the ``diagnose`` sub-command."""
    from descentlab.diagnostics.monitor import DEFAULT_INTERVAL
    from descentlab.init import SCHEMES

    p = subparsers.add_parser(
        "diagnose",
        help="train a problem under the training monitor and report problems",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--optimizer",
        type=a.known_name(_optimizer_names, "optimizer", ignore_case=True),
        default="adam",
        help="optimizer name: descentlab's or torch.optim's (default adam)",
    )
    p.add_argument(
        "--lr", type=a.nonnegative_float, default=1e-3, help="learning rate (default 1e-3)"
    )
    p.add_argument(
        "--hparam",
        type=_hparam,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another optimizer argument, e.g. --hparam momentum=0.9 (repeatable)",
    )
    p.add_argument(
        "--depth", type=a.positive_int, default=8, help="Linear layers of the MLP (default 8)"
    )
    p.add_argument("--width", type=a.positive_int, default=64, help="hidden units (default 64)")
    p.add_argument(
        "--init",
        default="kaiming_normal",
        choices=[*SCHEMES, "lsuv", "default"],
        help="initialisation scheme (default kaiming_normal)",
    )
    p.add_argument("--activation", default="relu", choices=["relu", "tanh"])
    p.add_argument("--steps", type=a.positive_int, default=200, help="steps (default 200)")
    p.add_argument(
        "--batch-size", type=a.positive_int, default=32, help="mini-batch size (default 32)"
    )
    p.add_argument(
        "--interval",
        type=a.positive_int,
        default=10,
        help=f"monitor interval (default 10: diagnosis runs are short; the library default, "
        f"tuned for overhead, is {DEFAULT_INTERVAL})",
    )
    p.add_argument(
        "--validate-every",
        type=a.positive_int,
        default=50,
        help="steps between validations (default 50)",
    )
    p.add_argument("--seed", type=a.seed, default=0, help="seed (default 0)")
    p.add_argument("--curvature", action="store_true", help="check the Hessian at the end")
    p.add_argument("--lr-find", action="store_true", help="run the learning-rate range test first")
    p.add_argument(
        "--problem", type=_problem_spec, help="FILE.py:FUNCTION returning a DiagnoseProblem"
    )
    p.add_argument("--html", type=a.output_file, help="write a self-contained HTML report here")
    p.add_argument("--json", type=a.output_file, help="write the findings as JSON here")
    p.add_argument(
        "--fail-on",
        choices=["warning", "error"],
        help="exit with status 1 if a finding this severe (or worse) is made",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, requires=a.needs("sklearn", "rich"))


def _load_problem(spec: str) -> Any:
    from descentlab.diagnostics.run import DiagnoseProblem

    path, _, func = spec.rpartition(":")
    module_spec = importlib.util.spec_from_file_location("descentlab_user_problem", path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"argument --problem: cannot load {path!r} as Python")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        build = getattr(module, func)
        problem = build()
    except Exception as exc:  # the user's code: report it in one line, no traceback
        raise ValueError(
            f"argument --problem: {spec} failed: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(problem, DiagnoseProblem):
        raise ValueError(
            f"argument --problem: {spec} must return a DiagnoseProblem, "
            f"got {type(problem).__name__}"
        )
    return problem


def _builtin_problem(args: argparse.Namespace) -> Any:
    import torch
    from torch import nn

    from descentlab.diagnostics.problems import batches, deep_mlp, load_digits_data
    from descentlab.diagnostics.run import DiagnoseProblem
    from descentlab.init import init_model

    data = load_digits_data(seed=args.seed)
    torch.manual_seed(args.seed)
    act = nn.ReLU if args.activation == "relu" else nn.Tanh
    model = deep_mlp(args.depth, args.width, activation=act)
    init_model(
        model,
        args.init,
        nonlinearity=args.activation,
        data=data.x_train[:256] if args.init == "lsuv" else None,
    )
    return DiagnoseProblem(
        model,
        nn.functional.cross_entropy,
        batches(data.x_train, data.y_train, args.batch_size, seed=args.seed),
        (data.x_val, data.y_val),
    )


def run(args: argparse.Namespace) -> int:
    """Run the diagnosis; print the summary; write HTML/JSON; return the exit status."""
    import torch
    from rich.console import Console

    console = Console()
    # tiny activations of bad inits are denormal floats, very slow on CPUs; torch's default
    # (no flushing) is restored on the way out
    torch.set_flush_denormal(True)
    try:
        return _run(args, console)
    finally:
        torch.set_flush_denormal(False)


def _run(args: argparse.Namespace, console: Any) -> int:
    import torch

    from descentlab.diagnostics.findings import Severity
    from descentlab.diagnostics.report import print_summary, write_html
    from descentlab.diagnostics.run import diagnose, make_optimizer

    hparams = dict(args.hparam)
    try:  # arguments first, on a stand-in parameter: bad ones stop before any work
        make_optimizer(args.optimizer, [torch.nn.Parameter(torch.zeros(1))], lr=args.lr, **hparams)
    except (ValueError, TypeError) as exc:
        return a.fail("descentlab diagnose", f"argument {'--hparam' if hparams else '--lr'}: {exc}")
    try:
        problem = _load_problem(args.problem) if args.problem else _builtin_problem(args)
    except ValueError as exc:
        return a.fail("descentlab diagnose", str(exc))
    optimizer = make_optimizer(args.optimizer, problem.model.parameters(), lr=args.lr, **hparams)
    extra: dict[str, Any] = {}
    if args.lr_find:
        from descentlab.diagnostics.lr_finder import lr_range_test

        res = lr_range_test(
            problem.model,
            optimizer,
            problem.criterion,
            problem.batches,
            num_steps=100,
            progress=not args.no_progress,
        )
        extra["lr_range_test"] = res.suggestions
        console.print(
            "learning-rate range test suggests: "
            + ", ".join(f"{k} {v:.3g}" for k, v in res.suggestions.items())
        )
    monitor = diagnose(
        problem.model,
        optimizer,
        problem.criterion,
        problem.batches,
        steps=args.steps,
        validation=problem.validation,
        validate_every=args.validate_every,
        interval=args.interval,
        curvature=args.curvature,
        progress=not args.no_progress,
    )
    print_summary(monitor, console)
    if args.html:
        write_html(monitor, args.html)
        console.print(f"HTML report: {args.html}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"command": sys.argv[1:], **monitor.to_dict(), **extra}
        args.json.write_text(json.dumps(payload, indent=2))
        console.print(f"findings: {args.json}")
    worst = monitor.worst()
    if args.fail_on and worst is not None and worst.rank >= Severity(args.fail_on).rank:
        return 1
    return 0
