"""The cautious flag on the Adam family and Lion (``cautious=True``; descentlab.rules.cautious).

References: pytorch_optimizer.Lion(cautious=True), which applies the mask
itself; for Adam, AdamW, NAdam, RAdam and Adamax (no reference package has
the flag on them) torch.optim's class computes each step u on a shadow copy
of the parameters and the test applies the mask to it (float64, 60 steps).
Then: the flag makes the group a tensor rule (never a fused or flat
elementwise kernel) and changes the result; engines agree bit for bit;
resume through a checkpoint and copies continue bit-identically; mixed
groups, low-precision state, torch.optim checkpoints; refusals.
"""

from __future__ import annotations

import pytest
import torch

import descentlab
from descentlab.rules.base import ELEMENTWISE, TENSOR
from tests.copies import HOWS, copy_by, saved_and_loaded
from tests.optim.helpers import float64_default, loss_fn, make_params, max_rel_diff, run_steps
from tests.optim.infos import CAUTIOUS_INFOS

CASES = [(info, s) for info in CAUTIOUS_INFOS for s in info.settings]
IDS = ["-".join([i.name] + [f"{k}={v}" for k, v in s.items()]) for i, s in CASES]
ENGINES = ["reference", "flat", "compiled", "auto"]
STEPS = 60


def sign(setting):
    return -1.0 if setting.get("maximize") else 1.0


def ours(info, setting, steps=STEPS, engine="auto", params=None):
    params = make_params() if params is None else params
    opt = info.ours(params, **setting, cautious=True, engine=engine)
    run_steps(opt, params, 0, steps, sign(setting))
    return params, opt


def masked(u, g):
    """The mask written out: u where u·g > 0, times n / (number kept + 1)."""
    keep = (u * g > 0).double()
    return u * keep * (u.numel() / (keep.sum() + 1))


def reference(info, setting, steps=STEPS):
    """The reference class's steps, with the mask applied to each step u by this test."""
    params = make_params()
    if info.name == "lion":  # pytorch_optimizer applies the mask itself
        opt = info.torch_cls(params, **setting, cautious=True, foreach=False)
        run_steps(opt, params, 0, steps, sign(setting))
        return params
    setting = dict(setting)
    decay = setting.pop("weight_decay")
    maximize = setting.pop("maximize", False)
    decoupled = setting.pop("decoupled_weight_decay", info.name == "adamw")
    lr = setting["lr"]
    shadow = [p.detach().clone() for p in params]
    extra = {"decoupled_weight_decay": decoupled} if info.name in ("nadam", "radam") else {}
    opt = info.torch_cls(shadow, **setting, weight_decay=0.0, **extra)
    for t in range(steps):
        for p in params:
            p.grad = None
        loss_fn(params, t, -1.0 if maximize else 1.0).backward()
        with torch.no_grad():
            for p, s in zip(params, shadow, strict=True):
                g = -p.grad if maximize else p.grad
                if decay and decoupled:
                    p.mul_(1 - lr * decay)
                elif decay:
                    g = g + decay * p
                s.copy_(p)
                s.grad = g.clone()
            opt.step()  # the reference's step from θ, with the decay already applied
            for p, s in zip(params, shadow, strict=True):
                p.sub_(masked(p - s, s.grad))
    return params


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float64_parity_with_the_reference_with_the_mask(case):
    info, setting = case
    with float64_default():
        mine, _ = ours(info, setting)
        theirs = reference(info, setting)
        plain = make_params()
        run_steps(info.ours(plain, **setting), plain, 0, STEPS, sign(setting))
    assert max_rel_diff(mine, theirs) <= 1e-10
    assert max_rel_diff(plain, theirs) > 1e-3  # the mask changes the result


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_engines_agree_bit_for_bit_and_never_run_an_elementwise_kernel(case):
    info, setting = case
    results = {}
    for engine in ENGINES:
        params, opt = ours(info, setting, steps=20, engine=engine)
        assert opt.rule_for(opt.param_groups[0]).kind == TENSOR
        results[engine] = params
    for engine in ENGINES[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[engine], results["reference"],
                                                     strict=True)), engine
    plain = info.ours(make_params(), **setting)
    assert plain.rule_for(plain.param_groups[0]).kind == ELEMENTWISE
    assert plain.param_groups[0]["cautious"] is False


@pytest.mark.parametrize("info", CAUTIOUS_INFOS, ids=[i.name for i in CAUTIOUS_INFOS])
def test_resume_from_a_checkpoint_is_bit_identical(info):
    setting = max(info.settings, key=len)
    params, opt = ours(info, setting, steps=10, engine="flat")
    saved = saved_and_loaded({"params": [p.detach() for p in params],
                              "optimizer": opt.state_dict()})
    resumed = [p.clone().requires_grad_() for p in saved["params"]]
    fresh = info.ours(resumed, **{**setting, "lr": 123.0}, cautious=True)
    fresh.load_state_dict(saved["optimizer"])
    assert fresh.param_groups[0]["cautious"] is True
    run_steps(fresh, resumed, 10, 10, sign(setting))
    run_steps(opt, params, 10, 10, sign(setting))
    uninterrupted, _ = ours(info, setting, steps=20)
    for a, b, c in zip(resumed, params, uninterrupted, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("info", CAUTIOUS_INFOS, ids=[i.name for i in CAUTIOUS_INFOS])
def test_copies_continue_the_same(info, how):
    setting = max(info.settings, key=len)
    params, opt = ours(info, setting, steps=10)
    twin = copy_by(opt, how)
    twin_params = [p for g in twin.param_groups for p in g["params"]]
    run_steps(twin, twin_params, 10, 10, sign(setting))
    run_steps(opt, params, 10, 10, sign(setting))
    assert all(torch.equal(a, b) for a, b in zip(params, twin_params, strict=True))


def test_mixed_groups_and_torch_checkpoints_both_ways():
    params = make_params()
    opt = descentlab.AdamW([{"params": params[:1], "cautious": True}, {"params": params[1:]}],
                           lr=0.01)
    run_steps(opt, params, 0, 5)
    kinds = [opt.rule_for(g).kind for g in opt.param_groups]
    assert kinds == [TENSOR, ELEMENTWISE]
    # the plain group is torch's AdamW, bit for bit
    twin = make_params()
    ref = torch.optim.AdamW(twin[1:], lr=0.01)
    masked_group = descentlab.AdamW(twin[:1], lr=0.01, cautious=True)
    run_steps(_Both(ref, masked_group), twin, 0, 5)
    assert all(torch.equal(a, b) for a, b in zip(params, twin, strict=True))
    # torch.optim takes our checkpoint (the extra key rides along) and gives one back
    def two_groups():
        fresh = [p.detach().clone().requires_grad_() for p in params]
        return [{"params": fresh[:1]}, {"params": fresh[1:]}]

    torch_opt = torch.optim.AdamW(two_groups(), lr=0.01)
    torch_opt.load_state_dict(opt.state_dict())
    back = descentlab.AdamW(two_groups(), lr=0.01)
    back.load_state_dict(torch_opt.state_dict())
    assert [g["cautious"] for g in back.param_groups] == [True, False]
    torch_saved = torch.optim.Adam(make_params(), lr=0.01).state_dict()
    plain = descentlab.Adam(make_params(), lr=0.01)
    plain.load_state_dict(torch_saved)  # a checkpoint without the key: the flag is off
    assert plain.param_groups[0]["cautious"] is False


class _Both:
    """Two optimizers stepped as one (for run_steps)."""

    def __init__(self, *opts):
        self.opts = opts

    def zero_grad(self):
        for o in self.opts:
            o.zero_grad()

    def step(self):
        for o in self.opts:
            o.step()


@pytest.mark.parametrize("precision", ["bf16", "8bit"])
def test_low_precision_state_with_the_mask_stays_close_to_full_state(precision):
    torch.manual_seed(0)
    full = [torch.randn(64, 80, dtype=torch.float32, requires_grad=True)]
    low = [full[0].detach().clone().requires_grad_()]
    opts = [descentlab.Adam(full, lr=1e-2, cautious=True),
            descentlab.Adam(low, lr=1e-2, cautious=True, state_precision=precision)]
    target = torch.randn(64, 80)
    for _ in range(20):
        for opt, (p,) in zip(opts, (full, low), strict=True):
            opt.zero_grad()
            ((p - target) ** 2).sum().backward()
            opt.step()
    assert opts[1].state[low[0]]["exp_avg" if precision == "bf16" else "exp_avg_codes"].dtype \
        == (torch.bfloat16 if precision == "bf16" else torch.uint8)
    assert max_rel_diff(low, full) < 2e-2


def test_refusals_name_the_argument():
    with pytest.raises(ValueError, match="cautious=True is not supported by sgd"):
        descentlab.SGD([{"params": make_params(), "cautious": True}], lr=0.1)
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = descentlab.Adam(emb.parameters(), cautious=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="cautious=True does not support sparse"):
        opt.step()
