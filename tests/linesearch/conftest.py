"""Run these small float64 tests on one intra-op thread (restored afterwards).

The problems are tiny, so extra threads only add contention on a shared machine
(measured: a Hessian-vector product on a 67-parameter network takes 0.75 ms on
one thread and 26 ms with two threads on a loaded two-core machine).
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
