"""``descentlab list``: the problems, suites, 2-D functions and optimizers, one line each."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["collect", "register", "run"]

SECTIONS = ("problems", "suites", "functions", "optimizers")


def register(subparsers: Any) -> None:
    """Add the ``list`` sub-command."""
    parser = subparsers.add_parser(
        "list",
        help="list problems, suites, 2-D functions and optimizers with one-line descriptions",
        description=__doc__.strip().split("\n")[0].split(": ", 1)[1],
    )
    parser.add_argument("what", nargs="?", choices=(*SECTIONS, "all"), default="all",
                        help="what to list (default all)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def _optimizers() -> list[dict[str, str]] | None:
    """Optimizers from ``descentlab.available_optimizers()``, or ``None`` if not there yet."""
    try:
        from descentlab import available_optimizers
    except ImportError:
        return None
    try:
        from descentlab.optim.registry import describe_optimizer
    except ImportError:  # descriptions are optional
        def describe_optimizer(name: str) -> str:
            return ""
    return [{"name": n, "description": describe_optimizer(n)} for n in available_optimizers()]


def _wrappers() -> list[dict[str, str]]:
    """Optimizer wrappers from ``descentlab.wrappers.available_wrappers()``."""
    from descentlab.wrappers import available_wrappers, describe_wrapper

    return [{"name": n, "description": describe_wrapper(n)} for n in available_wrappers()]


def _entrants() -> list[dict[str, str]] | None:
    """Benchmark entrants (names ``descentlab compare --optimizers`` takes), if present."""
    try:
        from descentlab.bench.entrants import available_entrants, get_entrant
    except ImportError:
        return None
    rows = []
    for name in available_entrants():
        entrant = get_entrant(name)
        rows.append({"name": name, "description": entrant.description,
                     "search_space": entrant.describe_space()})
    return rows


def collect(what: str = "all") -> dict[str, list[dict[str, Any]]]:
    """The listings as plain data: section name -> rows (sections that do not exist yet
    are left out)."""
    from descentlab.problems import (
        DEFAULT_SUITE,
        available_problems,
        available_suites,
        get_problem,
        get_suite,
    )
    from descentlab.problems.analytic import FUNCTIONS

    out: dict[str, list[dict[str, Any]]] = {}
    suites = [get_suite(name) for name in available_suites()]
    if what in ("all", "problems"):
        rows = []
        for name in available_problems():
            p = get_problem(name)
            rows.append({
                "name": name, "kind": p.kind, "version": p.version, "steps": p.steps,
                "batch_size": p.batch_size, "metric": p.metric, "target": p.target,
                "higher_is_better": p.higher_is_better, "default": name in DEFAULT_SUITE,
                "suites": [s.name for s in suites if name in s.problems],
                "fingerprint": p.fingerprint(), "description": p.description,
            })
        out["problems"] = rows
    if what in ("all", "suites"):
        out["suites"] = [
            {"name": s.name, "description": s.description, "problems": list(s.problems)}
            for s in suites
        ]
    if what in ("all", "functions"):
        out["functions"] = [
            {"name": fn.name, "formula": fn.formula, "start": list(fn.start),
             "minima": [list(m) for m in fn.minima]}
            for fn in FUNCTIONS.values()
        ]
    if what in ("all", "optimizers"):
        optimizers = _optimizers()
        if optimizers is not None:
            out["optimizers"] = optimizers
        out["wrappers"] = _wrappers()
        entrants = _entrants()
        if entrants is not None:
            out["entrants"] = entrants
    return out


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    )


def _text(data: dict[str, list[dict[str, Any]]]) -> str:
    parts = []
    if "problems" in data:
        rows = [["problem", "kind", "steps", "batch", "target", "suites", "description"]]
        for r in data["problems"]:
            arrow = "≥" if r["higher_is_better"] else "≤"
            rows.append([
                r["name"] + (" *" if r["default"] else ""), r["kind"], str(r["steps"]),
                ("-" if r["kind"] == "analytic" else "full") if r["batch_size"] is None
                else str(r["batch_size"]),
                f"{r['metric']} {arrow} {r['target']:g}", ",".join(r["suites"]) or "-",
                r["description"],
            ])
        parts.append("Problems (* = default suite of `descentlab compare`)\n" + _table(rows))
    if "suites" in data:
        rows = [["suite", "problems", "description"]]
        rows += [[r["name"], ", ".join(r["problems"]), r["description"]] for r in data["suites"]]
        parts.append("Problem suites (`descentlab compare --suite NAME`)\n" + _table(rows))
    if "functions" in data:
        rows = [["function", "f(x, y)", "start"]]
        rows += [[r["name"], r["formula"], f"({r['start'][0]:g}, {r['start'][1]:g})"]
                 for r in data["functions"]]
        parts.append("2-D functions (`descentlab visualize --function NAME`)\n" + _table(rows))
    if "optimizers" in data:
        rows = [["optimizer", "description"]]
        rows += [[r["name"], r["description"]] for r in data["optimizers"]]
        parts.append("Optimizers (`descentlab.make_optimizer(NAME, ...)`)\n" + _table(rows))
    if "wrappers" in data:
        rows = [["wrapper", "description"]]
        rows += [[r["name"], r["description"]] for r in data["wrappers"]]
        parts.append("Wrappers (`descentlab.wrappers.make_wrapped(NAME, OPTIMIZER, params, ...)`)\n"
                     + _table(rows))
    if "entrants" in data:
        rows = [["entrant", "description", "search space"]]
        rows += [[r["name"], r["description"], r["search_space"]] for r in data["entrants"]]
        parts.append("Benchmark entrants (`descentlab compare --optimizers NAMES`)\n"
                     + _table(rows))
    return "\n\n".join(parts)


def run(args: argparse.Namespace) -> int:
    """Print the listing; returns 0."""
    data = collect(args.what)
    print(json.dumps(data, indent=2, ensure_ascii=False) if args.json else _text(data))
    return 0
