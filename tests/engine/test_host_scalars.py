"""A run's scalar state over host memory (``engine/host_scalars.py``) and its use by the buckets."""

from __future__ import annotations

import pytest
import torch

import descentlab
from descentlab.engine.host_scalars import HostScalars
from tests.optim.helpers import float64_default, max_rel_diff


def test_tensor_ops_and_the_floats_see_the_same_memory():
    cells = HostScalars(["mu_product", "other"])
    assert set(cells) == {"mu_product", "other"}
    assert all(t.dim() == 0 and t.dtype == torch.float64 for t in cells.values())
    cells.set("mu_product", 0.123456789012345)
    assert float(cells["mu_product"]) == 0.123456789012345
    cells["other"].fill_(2.5).mul_(3.0)
    assert cells.value("other") == 7.5


@pytest.mark.parametrize("engine", ["flat", "compiled", "auto"])
def test_nadam_scalar_state_follows_torch_with_idle_parameters(engine):
    """NAdam's mu_product per slot, through the host cells: whole-buffer runs and runs split by
    parameters without a gradient, checked against torch.optim.NAdam and in state_dict()
    (float64 default dtype: torch keeps mu_product in it)."""
    with float64_default():
        _check_nadam_against_torch(engine)


def _check_nadam_against_torch(engine):
    torch.manual_seed(0)
    master = [torch.randn(n, dtype=torch.float64) for n in (3000, 50, 70_000)]
    ours = [m.clone().requires_grad_() for m in master]
    ref = [m.clone().requires_grad_() for m in master]
    opt = descentlab.NAdam(ours, lr=0.01, engine=engine)
    torch_opt = torch.optim.NAdam(ref, lr=0.01)
    for t in range(8):
        gen = torch.Generator().manual_seed(t)
        for k, (p, q) in enumerate(zip(ours, ref, strict=True)):
            idle = t in (3, 4) and k == 1  # the middle parameter rests: the buffer splits
            g = None if idle else torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.grad, q.grad = g, (None if g is None else g.clone())
        opt.step()
        torch_opt.step()
    assert max_rel_diff(ours, ref) <= 1e-12
    for i, (p, q) in enumerate(zip(ours, ref, strict=True)):
        mine = opt.state_dict()["state"][i]["mu_product"]
        theirs = torch_opt.state[q]["mu_product"]
        assert float(mine) == pytest.approx(float(theirs), rel=1e-15)
        assert float(opt.state[p]["mu_product"]) == float(mine)
