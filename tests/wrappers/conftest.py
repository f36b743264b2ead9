"""Small tests: one intra-op thread (a shared, loaded machine), float64 by default."""

from tests.precision import _float64_one_thread  # noqa: F401
