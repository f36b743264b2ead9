"""The problem and suite registries: look problems and named suites up by name.

Problem modules call :func:`register` at import time; the registry imports them
on first use, so ``import descentlab.problems`` stays cheap (scikit-learn and
the data are only loaded when a learning problem is built).

A *suite* is a named list of problems that ``descentlab compare --suite NAME``
runs; :func:`register_suite` adds one (``default`` and ``deep`` are built in).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from descentlab.checks import check_known
from descentlab.problems.base import Problem

__all__ = [
    "DEFAULT_SUITE",
    "DEEP_SUITE",
    "Suite",
    "available_problems",
    "available_suites",
    "get_problem",
    "get_suite",
    "register",
    "register_suite",
]

#: Modules that define problems, imported on first look-up.
_MODULES: tuple[str, ...] = (
    "descentlab.problems.analytic",
    "descentlab.problems.learning",
    "descentlab.problems.language",
    "descentlab.problems.residual",
    "descentlab.problems.sequence",
)

_REGISTRY: dict[str, Problem] = {}
_loaded = False

#: The suite ``descentlab compare`` runs when no problems are named. Chosen so
#: that tuning and re-running about nine optimizers fits in five minutes on two
#: cores: four cheap analytic problems that separate the methods (axis-aligned
#: ill-conditioning, a curved narrow valley, plateaus, gradient noise) and two
#: learning tasks that take a fraction of a second per run (logistic regression
#: on breast cancer, an MLP on digits). The costlier tasks (CNN, autoencoder,
#: transformer LM) make up the deep suite below (``--suite deep``).
DEFAULT_SUITE: list[str] = [
    "ill_conditioned_quadratic",
    "rosenbrock",
    "beale",
    "noisy_quadratic",
    "breast_cancer_logreg",
    "digits_mlp",
]

#: The deep-network suite (``descentlab compare --suite deep``): the kinds of
#: network people train, each a few seconds per mini-batch run on one core —
#: a CNN, a residual CNN with batch norm and augmentation, an autoencoder, a
#: transformer and an LSTM language model, and a GRU on a long-memory task.
DEEP_SUITE: list[str] = [
    "digits_cnn",
    "digits_resnet",
    "digits_autoencoder",
    "stdlib_char_transformer",
    "stdlib_char_lstm",
    "adding_gru",
]


@dataclass(frozen=True)
class Suite:
    """A named list of problems.

    Attributes:
        name: what ``--suite`` takes.
        description: one line, shown by ``descentlab list``.
        problems: problem names, in the order they are reported.
    """

    name: str
    description: str
    problems: tuple[str, ...]


def register(problem: Problem) -> Problem:
    """Add ``problem`` to the registry; a name may be registered only once."""
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a Problem, got {type(problem).__name__}")
    if problem.name in _REGISTRY and _REGISTRY[problem.name] != problem:
        raise ValueError(f"a different problem named {problem.name!r} is already registered")
    _REGISTRY[problem.name] = problem
    return problem


_SUITES: dict[str, Suite] = {}


def register_suite(name: str, problems: list[str] | tuple[str, ...], description: str) -> Suite:
    """Add the suite ``name``; its problem names are checked when it is first looked up.

    Raises:
        ValueError: the name is taken by a different suite, or ``problems`` is
            empty or names a problem twice.
    """
    suite = Suite(name, description, tuple(problems))
    if not suite.problems:
        raise ValueError(f"suite {name!r} names no problems")
    dupes = sorted({p for p in suite.problems if suite.problems.count(p) > 1})
    if dupes:
        raise ValueError(f"suite {name!r} names problems more than once: {', '.join(dupes)}")
    if name in _SUITES and _SUITES[name] != suite:
        raise ValueError(f"a different suite named {name!r} is already registered")
    _SUITES[name] = suite
    return suite


register_suite("default", DEFAULT_SUITE,
               "what `descentlab compare` runs: analytic functions and two quick learning tasks")
register_suite("deep", DEEP_SUITE,
               "deep networks: CNN, residual CNN + BN, autoencoder, transformer, LSTM, GRU")


def available_suites() -> list[str]:
    """Names of all registered suites, sorted."""
    return sorted(_SUITES)


def get_suite(name: str) -> Suite:
    """The suite registered as ``name``, after checking that its problems exist.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: no such suite (the message suggests the closest name and lists
            the valid ones), or the suite names an unregistered problem.
    """
    if not isinstance(name, str):
        raise TypeError(f"suite name must be a str, got {name!r} ({type(name).__name__})")
    suite = _SUITES[check_known(name, sorted(_SUITES), "suite")]
    for problem in suite.problems:
        get_problem(problem)
    return suite


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
