"""``descentlab schedules``: draw every schedule in :mod:`descentlab.schedules` on one PNG.

Writes a grid with one panel per schedule family (decays, warm restarts,
warm-up, WSD, one-cycle, cyclic, composition, reduce-on-plateau), peak value
1, over ``--steps`` steps.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "run"]


def _steps(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 20:
        raise argparse.ArgumentTypeError(f"must be an integer >= 20, got {text!r}")
    return value


def register(subparsers: Any) -> None:
    """Add the ``schedules`` sub-command."""
    parser = subparsers.add_parser(
        "schedules",
        help="plot every learning-rate/hyperparameter schedule on one PNG",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument(
        "--output", "-o", default="schedules.png", metavar="PATH",
        help="PNG file to write (default: schedules.png)",
    )
    parser.add_argument(
        "--steps", type=_steps, default=1000, metavar="N",
        help="number of steps on the x axis (default 1000)",
    )
    parser.add_argument(
        "--columns", type=int, default=4, metavar="N",
        help="panels per row (default 4)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the figure; print where it went and what it shows."""
    from descentlab.schedules.plot import plot_schedules, schedule_gallery

    panels = schedule_gallery(args.steps)
    if args.columns < 1:
        print(f"descentlab schedules: --columns must be >= 1, got {args.columns}")
        return 2
    plot_schedules(panels, args.steps, args.output, ncols=args.columns)
    print(f"wrote {args.output}: {len(panels)} panels over {args.steps} steps")
    for name in panels:
        print(f"  - {name}")
    return 0
