"""One torch thread for a test: small products on a shared machine wait seconds for a second one
(the engines' own context manager)."""

from descentlab.engine.whole import one_thread

__all__ = ["one_thread"]
