"""Bad hook arguments fail at construction, naming the argument and the value."""

from __future__ import annotations

import pytest
import torch.distributed as dist

import descentlab.distributed as D


@pytest.mark.parametrize(("make", "message"), [
    (lambda: D.ThresholdState(threshold=0.0), "threshold must be a finite number > 0, got 0.0"),
    (lambda: D.ThresholdState(threshold=-1), "threshold must be a finite number > 0, got -1"),
    (lambda: D.ThresholdState(density=0.0), "density must be a number in (0, 1], got 0.0"),
    (lambda: D.ThresholdState(density=1.5), "density must be a number in (0, 1], got 1.5"),
    (lambda: D.ThresholdState(), "needs exactly one of threshold=τ (fixed) and density=d"),
    (lambda: D.ThresholdState(threshold=0.1, density=0.1), "needs exactly one of"),
    (lambda: D.ThresholdState(density=0.1, message="bits"),
     "message must be 'sign' or 'value', got 'bits'"),
    (lambda: D.TopKState(density=-0.01), "density must be a number in (0, 1], got -0.01"),
    (lambda: D.TopKState(density=2), "density must be a number in (0, 1], got 2"),
    (lambda: D.TopKState(index_coding="int8"), "index_coding must be one of"),
    (lambda: D.TopKState(value_coding="fp4"), "value_coding must be one of"),
    (lambda: D.TopKState(value_coding="sign"), "TopKState sends values: value_coding must be"),
    (lambda: D.DGCState(value_coding="sign"), "DGCState sends values: value_coding must be"),
    (lambda: D.ThresholdState(density=0.1, message="value", value_coding="sign"),
     "message='value' sends values: value_coding must not be 'sign'"),
    (lambda: D.DGCState(density=0), "density must be a number in (0, 1], got 0"),
    (lambda: D.DGCState(momentum=1.0), "momentum must be a number in [0, 1), got 1.0"),
    (lambda: D.DGCState(clip_norm=0), "clip_norm must be None or a finite number > 0, got 0"),
    (lambda: D.DGCState(warmup_steps=-1), "warmup_steps must be an int >= 0, got -1"),
    (lambda: D.DGCState(warmup=(0.25, 0)), "warmup density must be a number in (0, 1], got 0"),
])
def test_constructor_checks(make, message) -> None:
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


def test_dgc_refuses_an_optimizer_with_momentum() -> None:
    import torch

    p = [torch.nn.Parameter(torch.zeros(2))]
    state = D.DGCState()
    state.check_optimizer(torch.optim.SGD(p, lr=0.1))
    with pytest.raises(ValueError, match="param group 0 has momentum=0.9"):
        state.check_optimizer(torch.optim.SGD(p, lr=0.1, momentum=0.9))
    with pytest.raises(ValueError, match=r"betas=\(0.9, 0.999\)"):
        state.check_optimizer(torch.optim.Adam(p))


def test_unsupported_backend_is_named() -> None:
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    try:
        with pytest.raises(ValueError, match="the process group's backend is 'fake'"):
            D.TopKState(density=0.01)
    finally:
        dist.destroy_process_group()


def test_unbound_state_checks_the_backend_when_bound() -> None:
    from torch.testing._internal.distributed.fake_pg import FakeStore

    state = D.SignState()  # no process group yet: nothing to check
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    try:
        with pytest.raises(ValueError, match="backend is 'fake'"):
            state.bind()
    finally:
        dist.destroy_process_group()
