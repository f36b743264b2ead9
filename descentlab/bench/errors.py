"""The benchmark's user-facing error.

:class:`BenchError` carries a message meant for the person at the terminal:
what is wrong, with which value, and what to do about it. The ``compare``
command prints it without a traceback and exits with status 2.
"""

from __future__ import annotations

__all__ = ["BenchError"]


class BenchError(RuntimeError):
    """A problem with the benchmark's input or environment (bad option, output, database)."""
