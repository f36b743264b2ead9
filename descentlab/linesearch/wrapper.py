"""``WithLineSearch`` (see :mod:`descentlab.wrappers.line_search`).

Kept so that ``from descentlab.linesearch.wrapper import WithLineSearch`` keeps working.
"""

from descentlab.wrappers.line_search import WithLineSearch

__all__ = ["WithLineSearch"]
