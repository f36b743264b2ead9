"""The transient rich progress bar the long diagnostics show (``progress=True``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(enabled: bool, description: str, total: int) -> Iterator[Callable[[], None]]:
    """Show a transient ``rich`` bar of ``total`` units while the block runs.

    Yields ``advance()``, which moves the bar one unit (a no-op when
    ``enabled`` is false, in which case rich is not imported). The bar is
    removed when the block ends, also on an exception.
    """
    if not enabled:
        yield lambda: None
        return
    from rich.progress import Progress

    bar = Progress(transient=True)
    bar.start()
    task = bar.add_task(description, total=total)
    try:
        yield lambda: bar.advance(task)
    finally:
        bar.stop()
