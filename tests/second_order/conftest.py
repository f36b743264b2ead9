"""Every test here runs in float64 on one intra-op thread (see :mod:`tests.precision`)."""

from tests.precision import _float64_one_thread  # noqa: F401 (autouse fixture)
