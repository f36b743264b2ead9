"""Argument checks: moved to :mod:`descentlab.validation` (rules use them too); re-exported here."""

from descentlab.validation import *  # noqa: F403
from descentlab.validation import __all__  # noqa: F401
