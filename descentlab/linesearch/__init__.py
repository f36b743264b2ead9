"""Line searches: Armijo, Armijo–Goldstein, full relaxation, strong Wolfe, stochastic Armijo.

Each search is a configured object usable on its own (``StrongWolfe()(fun, x, d)``,
raising :class:`LineSearchError` when no step is found) or inside the
closure-based optimizers of :mod:`descentlab.second_order` (``line_search=...``).
:class:`WithLineSearch` adds a line search to the steps of any optimizer.
"""

from descentlab.linesearch.backtracking import Armijo, ArmijoGoldstein, FullRelaxation
from descentlab.linesearch.base import (
    LineObjective,
    LineSearch,
    LineSearchError,
    LineSearchResult,
)
from descentlab.linesearch.stochastic import StochasticArmijo
from descentlab.linesearch.wolfe import StrongWolfe

#: Line searches by name, as accepted by ``line_search=`` arguments.
registry: dict[str, type[LineSearch]] = {
    "armijo": Armijo,
    "armijo_goldstein": ArmijoGoldstein,
    "full_relaxation": FullRelaxation,
    "strong_wolfe": StrongWolfe,
    "stochastic_armijo": StochasticArmijo,
}



def __getattr__(name: str):
    # WithLineSearch lives with the other wrappers (descentlab.wrappers), which import this
    # package; importing it lazily keeps `from descentlab.linesearch import WithLineSearch`.
    if name == "WithLineSearch":
        from descentlab.wrappers.line_search import WithLineSearch

        return WithLineSearch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Armijo",
    "ArmijoGoldstein",
    "FullRelaxation",
    "LineObjective",
    "LineSearch",
    "LineSearchError",
    "LineSearchResult",
    "StochasticArmijo",
    "StrongWolfe",
    "WithLineSearch",
    "registry",
]
