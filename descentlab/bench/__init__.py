"""The benchmark harness behind ``descentlab compare``.

A fair, resumable optimizer comparison after DeepOBS and MLCommons AlgoPerf:
fixed, versioned problems (:mod:`descentlab.problems`); per optimizer a
documented search space (:mod:`~descentlab.bench.entrants`); Optuna tuning on
the validation metric and re-runs of the best setting over seeds
(:mod:`~descentlab.bench.protocol`); every finished trial and run saved at
once to SQLite or a server database (:mod:`~descentlab.bench.store`);
performance profiles and the AlgoPerf score (:mod:`~descentlab.bench.scoring`);
worker processes (:mod:`~descentlab.bench.workers`); and a self-contained
HTML report (:mod:`~descentlab.bench.report`).

Example::

    from descentlab.bench import compare

    result = compare(["sgd", "momentum", "adam"], ["rosenbrock", "digits_mlp"],
                     trials=8, seeds=3, out="runs/demo", workers=2)
    print(result.leaderboard_markdown)   # and open runs/demo/report.html
"""

from typing import Any

# Names resolve on first use (PEP 562), so importing one submodule, as the
# command line does, does not import Optuna, SQLAlchemy and matplotlib.
_EXPORTS = {
    "ENTRANTS": "entrants",
    "SEED_FAMILY": "entrants",
    "Entrant": "entrants",
    "Param": "entrants",
    "available_entrants": "entrants",
    "get_entrant": "entrants",
    "BenchError": "errors",
    "CompareResult": "harness",
    "compare": "harness",
    "Protocol": "protocol",
    "performance_profile": "scoring",
    "performance_ratios": "scoring",
    "score": "scoring",
    "ResultStore": "store",
}

__all__ = [
    "ENTRANTS",
    "SEED_FAMILY",
    "BenchError",
    "CompareResult",
    "Entrant",
    "Param",
    "Protocol",
    "ResultStore",
    "available_entrants",
    "compare",
    "get_entrant",
    "performance_profile",
    "performance_ratios",
    "score",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"descentlab.bench.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'descentlab.bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
