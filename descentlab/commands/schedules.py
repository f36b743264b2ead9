"""``descentlab schedules``: draw every schedule in :mod:`descentlab.schedules` on one PNG.

Writes a grid with one panel per schedule family (decays, warm restarts,
warm-up, WSD, one-cycle, cyclic, composition, reduce-on-plateau), peak value
1, over ``--steps`` steps.
"""

from __future__ import annotations

import argparse
from typing import Any

from descentlab.commands import arguments as a

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``schedules`` sub-command."""
    parser = subparsers.add_parser(
        "schedules",
        help="plot every learning-rate/hyperparameter schedule on one PNG",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument(
        "--output", "-o", type=a.output_file, default="schedules.png", metavar="PATH",
        help="PNG file to write (default: schedules.png)",
    )
    parser.add_argument(
        "--steps", type=a.int_at_least(20), default=1000, metavar="N",
        help="number of steps on the x axis (default 1000)",
    )
    parser.add_argument(
        "--columns", type=a.positive_int, default=4, metavar="N",
        help="panels per row (default 4)",
    )
    parser.set_defaults(func=run, requires=a.needs("matplotlib"))


def run(args: argparse.Namespace) -> int:
    """Write the figure; print where it went and what it shows."""
    from descentlab.schedules.plot import plot_schedules, schedule_gallery

    panels = schedule_gallery(args.steps)
    plot_schedules(panels, args.steps, args.output, ncols=args.columns)
    print(f"wrote {args.output}: {len(panels)} panels over {args.steps} steps")
    for name in panels:
        print(f"  - {name}")
    return 0
