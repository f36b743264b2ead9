"""Parity with torch.optim: same trajectory over 120 steps for every optimizer and setting."""

from __future__ import annotations

import pytest
import torch

from tests.optim.engines import ENGINES_UNDER_TEST
from tests.optim.helpers import max_rel_diff, train
from tests.optim.infos import case_id, engine_cases

CASES = engine_cases(ENGINES_UNDER_TEST)
IDS = [f"{case_id(c[:2])}-{c[2]}" for c in CASES]


@pytest.fixture
def float64_scalars():
    """torch.optim keeps some bookkeeping scalars (NAdam's mu_product) in the default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float64_parity_with_torch(case, float64_scalars):
    info, setting, engine = case
    ours, _ = train(info.ours, setting, engine=engine)
    ref, _ = train(info.torch_cls, setting, foreach=False)
    assert max_rel_diff(ours, ref) <= 1e-13


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_parity_with_torch(case):
    info, setting, engine = case
    ours, _ = train(info.ours, setting, dtype=torch.float32, engine=engine)
    ref, _ = train(info.torch_cls, setting, dtype=torch.float32, foreach=False)
    assert max_rel_diff(ours, ref) <= 5e-6
