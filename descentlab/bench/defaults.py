"""Default budgets of ``descentlab compare`` (kept import-light for the command line).

With these and the default suite, the seeds' eight optimizers are tuned and
re-run on six problems in about three minutes on two busy cores
(``benchmarks/compare_default.py``).
"""

from __future__ import annotations

__all__ = ["DEFAULT_TRIALS", "DEFAULT_SEEDS", "DEFAULT_WORKERS", "DEFAULT_STALE_AFTER"]

DEFAULT_TRIALS = 10
"""Optuna trials per (problem, optimizer)."""

DEFAULT_SEEDS = 3
"""Seeds the best setting is re-run on."""

DEFAULT_WORKERS = 2
"""Worker processes of the command line (the Python API defaults to 1)."""

DEFAULT_STALE_AFTER = 30.0
"""Seconds without a heartbeat after which another process's claimed work is taken over."""
