"""Schedule-Free under every engine: the package's bits eagerly, its values to rounding compiled.

The step is an elementwise rule (descentlab.rules.schedule_free): the flat
engine runs it in chunks over flat buffers (small chunks here, so one
tensor is cut and neighbours share a chunk; a non-contiguous tensor is
stepped per tensor) and must give the bits of the package's class; the
compiled kernel may round differently, within 1e-10 relative in float64 of
the package's ``*Reference`` classes over 100 steps (measured ≤ 2e-15).
``train()``/``eval()`` are one ``lerp`` per flat buffer.
"""

from __future__ import annotations

import pytest
import schedulefree
import torch

import descentlab
from descentlab.engine import kernels
from descentlab.engine.flat import FlatEngine
from tests.optim.helpers import max_rel_diff

#: (ours, the package's class, its reference class, a setting with warm-up and weight decay);
#: schedulefree ships no RAdam reference: its class (the same equations) stands in
CASES = [
    (descentlab.SGDScheduleFree, schedulefree.SGDScheduleFree,
     schedulefree.SGDScheduleFreeReference,
     {"lr": 0.1, "momentum": 0.8, "weight_decay": 0.1, "warmup_steps": 20}),
    (descentlab.AdamWScheduleFree, schedulefree.AdamWScheduleFree,
     schedulefree.AdamWScheduleFreeReference,
     {"lr": 0.01, "weight_decay": 0.1, "warmup_steps": 20}),
    (descentlab.RAdamScheduleFree, schedulefree.RAdamScheduleFree,
     schedulefree.RAdamScheduleFree,
     {"lr": 0.01, "weight_decay": 0.1, "silent_sgd_phase": False}),
]
IDS = [c[0].__name__ for c in CASES]


def params(dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    tensors = (torch.randn(7, 9, generator=gen), torch.randn(5, generator=gen),
               torch.randn(3, generator=gen), torch.randn(6, 4, generator=gen).t())
    return [t.to(dtype).requires_grad_() for t in tensors]  # the last is not contiguous


def trained(cls, setting, steps, dtype=torch.float64, **engine):
    """(y after ``steps`` steps, x after eval()), on a quadratic with per-tensor weights."""
    ps = params(dtype)
    opt = cls(ps, **setting, **engine)
    opt.train()
    for t in range(steps):
        opt.zero_grad()
        gen = torch.Generator().manual_seed(t)
        sum(((p - torch.randn(p.shape, generator=gen, dtype=dtype)) ** 2 * (i + 1)).sum()
            for i, p in enumerate(ps)).backward()
        opt.step()
    y = [p.detach().clone() for p in ps]
    opt.eval()
    return y, [p.detach().clone() for p in ps]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("engine", ["reference", "flat"])
@pytest.mark.parametrize(("ours", "package", "reference", "setting"), CASES, ids=IDS)
def test_eager_engines_give_the_packages_bits(ours, package, reference, setting, engine, dtype,
                                             monkeypatch):
    monkeypatch.setattr(FlatEngine, "chunk", 8)
    mine = trained(ours, setting, 30, dtype, engine=engine)
    theirs = trained(package, setting, 30, dtype)
    for a, b in zip(mine[0] + mine[1], theirs[0] + theirs[1], strict=True):
        assert torch.equal(a, b)


@pytest.fixture
def own_kernels(monkeypatch):
    """The kernels these tests build stay theirs: the default engine steps any run with a
    ready kernel, and the package suite in the same process expects the eager engines' bits."""
    monkeypatch.setattr(kernels, "_KERNELS", dict(kernels._KERNELS))


@pytest.mark.usefixtures("own_kernels")
@pytest.mark.parametrize(("ours", "package", "reference", "setting"), CASES, ids=IDS)
def test_compiled_kernel_matches_the_reference_in_float64(ours, package, reference, setting):
    mine = trained(ours, setting, 100, engine="compiled")
    theirs = trained(reference, setting, 100)
    assert max_rel_diff(mine[0], theirs[0]) <= 1e-10  # the training point y
    assert max_rel_diff(mine[1], theirs[1]) <= 1e-10  # the average x


@pytest.mark.usefixtures("own_kernels")
def test_compiled_kernel_matches_the_package_in_float32():
    ours, package, _, setting = CASES[1]
    mine = trained(ours, setting, 100, torch.float32, engine="compiled")
    theirs = trained(package, setting, 100, torch.float32)
    assert max_rel_diff(mine[0] + mine[1], theirs[0] + theirs[1]) <= 1e-5  # measured 1.4e-7


def test_train_and_eval_are_one_pass_per_flat_buffer():
    ps = [torch.randn(n, dtype=torch.float64, requires_grad=True) for n in (5, 3, 4, 6)]
    opt = descentlab.AdamWScheduleFree(ps, lr=0.1, engine="flat")
    twin = [p.detach().clone().requires_grad_() for p in ps]
    ref = descentlab.AdamWScheduleFree(twin, lr=0.1, engine="reference")
    idle = ps[2].detach().clone()
    for o, qs in ((opt, ps), (ref, twin)):
        o.train()
        for _ in range(3):
            o.zero_grad()
            sum((q**2).sum() for i, q in enumerate(qs) if i != 2).backward()  # no grad for #2
            o.step()
    runs = opt._engine.state_runs(opt, opt.param_groups[0])
    assert [p.numel() for p, _ in runs] == [16 + 16, 16]  # slots padded to 16; #2 has no state
    for o in (opt, ref):
        o.eval()
    assert torch.equal(ps[2].detach(), idle)  # no state, no z: left alone
    assert all(torch.equal(a, b) for a, b in zip(ps, twin, strict=True))
    ps[2].grad = torch.ones_like(ps[2])
    opt.train()
    opt.step()  # now every slot has state: one run over the whole buffer
    assert len(opt._engine.state_runs(opt, opt.param_groups[0])) == 1


def test_groups_may_name_another_schedule_free_rule_and_no_other():
    w, b = torch.randn(4, 3, requires_grad=True), torch.randn(3, requires_grad=True)
    opt = descentlab.AdamWScheduleFree([{"params": [w]},
                                        {"params": [b], "rule": "sgd_schedulefree", "lr": 0.5}])
    assert opt.param_groups[1]["momentum"] == 0.9 and opt.param_groups[1]["k"] == 0
    opt.train()
    (w.sum() + b.sum()).backward()
    opt.step()
    assert set(opt.state[b]) == {"step", "z"} and opt.param_groups[1]["k"] == 1
    with pytest.raises(ValueError, match="a group cannot run rule 'adam'"):
        descentlab.SGDScheduleFree([{"params": [torch.zeros(2, requires_grad=True)],
                                     "rule": "adam"}])
    with pytest.raises(ValueError, match="needs a Schedule-Free optimizer"):
        descentlab.Adam([{"params": [torch.zeros(2, requires_grad=True)],
                          "rule": "adamw_schedulefree"}])
