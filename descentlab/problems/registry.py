"""The problem registry: look problems up by name.

Problem modules call :func:`register` at import time; the registry imports them
on first use, so ``import descentlab.problems`` stays cheap (scikit-learn and
the data are only loaded when a learning problem is built).
"""

from __future__ import annotations

import importlib

from descentlab.problems.base import Problem

__all__ = ["DEFAULT_SUITE", "available_problems", "get_problem", "register"]

#: Modules that define problems, imported on first look-up.
_MODULES: tuple[str, ...] = (
    "descentlab.problems.analytic",
    "descentlab.problems.learning",
    "descentlab.problems.language",
)

_REGISTRY: dict[str, Problem] = {}
_loaded = False

#: The suite ``descentlab compare`` runs when no problems are named. Chosen so
#: that tuning and re-running about nine optimizers fits in five minutes on two
#: cores: four cheap analytic problems that separate the methods (axis-aligned
#: ill-conditioning, a curved narrow valley, plateaus, gradient noise) and two
#: learning tasks that take a fraction of a second per run (logistic regression
#: on breast cancer, an MLP on digits). The costlier tasks (CNN, autoencoder,
#: transformer LM) are left to ``--problems``.
DEFAULT_SUITE: list[str] = [
    "ill_conditioned_quadratic",
    "rosenbrock",
    "beale",
    "noisy_quadratic",
    "breast_cancer_logreg",
    "digits_mlp",
]


def register(problem: Problem) -> Problem:
    """Add ``problem`` to the registry; a name may be registered only once."""
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a Problem, got {type(problem).__name__}")
    if problem.name in _REGISTRY and _REGISTRY[problem.name] != problem:
        raise ValueError(f"a different problem named {problem.name!r} is already registered")
    _REGISTRY[problem.name] = problem
    return problem


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        for module in _MODULES:
            importlib.import_module(module)
        _loaded = True


def available_problems() -> list[str]:
    """Names of all registered problems, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_problem(name: str) -> Problem:
    """The problem registered as ``name``.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: no such problem; the message lists the valid names.
    """
    if not isinstance(name, str):
        raise TypeError(f"problem name must be a str, got {name!r} ({type(name).__name__})")
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown problem {name!r}; valid names: {valid}") from None
