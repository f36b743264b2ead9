"""Run the problem tests on one thread: the machines are shared, and torch's
intra-op threads only oversubscribe the cores for models this small."""

from __future__ import annotations

import pytest
import torch

from tests.browser import driver  # noqa: F401 (headless Chromium for the browser tests)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
