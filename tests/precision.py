"""Run small tests in float64 on one intra-op thread (both restored afterwards).

The problems are tiny, so extra threads only add contention on a shared machine
(measured: a Hessian-vector product on a 67-parameter network takes 0.75 ms on
one thread and 26 ms with two threads on a loaded two-core machine).

A test folder's ``conftest.py`` turns it on for every test there by importing
the autouse fixture: ``from tests.precision import _float64_one_thread``.
"""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _float64_one_thread() -> Iterator[None]:
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)
