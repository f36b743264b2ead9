"""What parameters and arguments torch.optim accepts, and how it refuses the rest.

These are the user-facing behaviours torch's own optimizer suite
(``test/test_optim.py``) checks, kept here so CI keeps them.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import descentlab
from descentlab.rules.base import TENSOR
from tests.optim.engines import ENGINES_UNDER_TEST
from tests.optim.helpers import float64_default, make_params, max_rel_diff, run_steps
from tests.optim.infos import INFOS

IDS = [info.name for info in INFOS]


def net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    layers = torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)
    return torch.nn.Sequential(*layers).double()


def fit(model, opt, steps=5):
    x = torch.linspace(-1, 1, 8 * 4, dtype=torch.float64).reshape(8, 4)
    for _ in range(steps):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_groups_given_as_generators_match_torch(info, engine):
    setting = info.settings[0]
    results = []
    with float64_default():
        for cls, extra in ((info.ours, {"engine": engine}), (info.torch_cls, {})):
            model = net()
            groups = [
                {"params": model[0].parameters()},
                {"params": model[2].parameters(), "lr": 0.01},
            ]
            opt = cls(groups, **setting, **extra)
            assert [len(g["params"]) for g in opt.param_groups] == [2, 2]
            fit(model, opt)
            results.append(list(model.parameters()))
    assert max_rel_diff(*results) <= 1e-12


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_meta_parameters_construct_and_step_as_in_torch(info, engine):
    """A model built on ``meta`` (to be materialised later) steps there, as with torch.optim."""
    if info.name in ("asgd", "adafactor"):
        pytest.skip(f"torch.optim's {info.name} cannot step meta parameters (it calls .item())")
    with torch.device("meta"):
        model = torch.nn.Linear(3, 2)
    opts = [cls(model.parameters(), **info.settings[0], **extra)
            for cls, extra in ((info.ours, {"engine": engine}), (info.torch_cls, {}))]
    for _ in range(2):
        for opt in opts:
            for p in model.parameters():
                p.grad = torch.ones_like(p)
            opt.step()
    ours, theirs = (opt.state_dict()["state"] for opt in opts)
    for i, mine in ours.items():  # torch's SGD keeps no step, so no state without momentum
        assert set(mine) - {"step"} == set(theirs.get(i, {})) - {"step"}
        assert all(v.is_meta for k, v in mine.items() if k != "step")
        assert mine["step"] == 2
    model.to_empty(device="cpu")  # new parameters; the old optimizers hold the meta ones
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opts[0].step()
    info.ours(model.parameters(), **info.settings[0], engine=engine).step()


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_hyperparameters_are_checked_before_params_as_in_torch(info):
    """torch.optim checks its numbers first: a bad one is a ValueError even with bad params."""
    with pytest.raises(ValueError, match=r"lr must be"):
        info.ours(None, lr=-1.0)
    with pytest.raises(ValueError, match=r"lr as a tensor must have exactly one element"):
        info.ours(None, lr=torch.tensor([0.001, 0.001]))
    with pytest.raises(TypeError, match=r"params must be an iterable"):
        info.ours(None)


def test_mixed_float_and_tensor_betas_are_refused_as_in_torch():
    for betas in ((0.9, torch.tensor(0.99)), (torch.tensor(0.9), 0.99)):
        with pytest.raises(ValueError, match=r"betas must be either all floats or all tensors"):
            descentlab.Adam([torch.zeros(2, requires_grad=True)], betas=betas)
    x = torch.ones(2, requires_grad=True)
    descentlab.Adam([x], betas=(torch.tensor(0.9), torch.tensor(0.99)))


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
def test_duplicate_parameters_in_a_group_warn_and_step_twice_as_in_torch(engine):
    """torch.optim warns and steps such a parameter once per entry (plain SGD: exactly so).

    With momentum the two libraries differ (torch reads every entry's buffer before
    updating any; we step the entries one after the other); torch says this will
    become an error.
    """
    results = []
    for cls, extra in ((descentlab.SGD, {"engine": engine}), (torch.optim.SGD, {})):
        x = torch.ones(3, dtype=torch.float64, requires_grad=True)
        with pytest.warns(UserWarning, match=r"duplicate parameters"):
            opt = cls([x, x], lr=0.1, **extra)
        for _ in range(3):
            x.grad = torch.full_like(x, 2.0)
            opt.step()
        results.append(x.detach().clone())
    assert torch.equal(results[0], results[1])
    assert results[0].tolist() == pytest.approx([1 - 3 * 2 * 0.2] * 3)


def test_the_same_parameter_in_two_groups_is_refused():
    x = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=r"more than one parameter group"):
        descentlab.Adam([{"params": x}, {"params": [x]}])


def test_a_set_inside_a_group_is_refused_as_in_torch():
    with pytest.raises(TypeError, match=r"as a set"):
        descentlab.SGD([{"params": {torch.zeros(2, requires_grad=True)}}])


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_named_parameters_keep_their_names_in_the_state_dict(info):
    names = ["0.weight", "0.bias", "2.weight", "2.bias"]
    model = net()
    opt = info.ours(model.named_parameters(), **info.settings[0])
    fit(model, opt, steps=2)
    assert opt.state_dict()["param_groups"][0]["param_names"] == names
    other = net()
    unnamed = info.ours(other.parameters(), **info.settings[0])  # names travel with the load
    unnamed.load_state_dict(opt.state_dict())
    fit(other, unnamed, steps=1)
    assert unnamed.state_dict()["param_groups"][0]["param_names"] == names
    assert repr(unnamed).startswith(type(unnamed).__name__)
    with pytest.raises(ValueError, match=r"with/without names"):
        info.ours([("w", torch.zeros(1, requires_grad=True)), torch.zeros(1, requires_grad=True)])


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_zero_gradients_leave_parameters_unchanged(info, engine):
    setting = {k: v for k, v in info.settings[0].items() if k != "weight_decay"}
    if info.name == "adamw":
        setting["weight_decay"] = 0.0
    if info.name == "asgd":  # its decay term λ shrinks θ whatever the gradient
        setting["lambd"] = 0.0
    x = torch.randn(5, 1, dtype=torch.float64, requires_grad=True)
    before = x.detach().clone()
    opt = info.ours([x], **setting, engine=engine)
    for _ in range(3):
        x.grad = torch.zeros_like(x)
        opt.step()
    assert torch.equal(x.detach(), before)


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_complex_parameters_step_as_their_real_view_with_every_setting(info, engine):
    """A complex parameter moves exactly like its real view (Adagrad's s₀ on both parts)."""
    if info.kind == TENSOR:
        pytest.skip("tensor rules refuse complex parameters at construction (test_rule_kinds)")
    for setting in info.settings:
        torch.manual_seed(0)
        z = torch.randn(4, 3, dtype=torch.complex128, requires_grad=True)
        r = torch.view_as_real(z).detach().clone().requires_grad_()
        opt_z = info.ours([z], **setting, engine=engine)
        opt_r = info.ours([r], **setting, engine=engine)
        for _ in range(3):
            g = torch.randn(4, 3, 2, dtype=torch.float64)
            z.grad, r.grad = torch.view_as_complex(g.clone()), g
            opt_z.step()
            opt_r.step()
        assert torch.equal(torch.view_as_real(z.detach()), r.detach())


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_step_and_state_dict_hooks_fire(info):
    params = make_params()
    opt = info.ours(params, **info.settings[0])
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    handle = register_optimizer_step_pre_hook(lambda o, a, k: calls.append("global"))
    try:
        run_steps(opt, params, 0, 1)
    finally:
        handle.remove()
    assert calls == ["global", "pre", "post"]
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "tagged": True})
    opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append("load"))
    saved = opt.state_dict()
    assert saved["tagged"]
    opt.load_state_dict(saved)
    assert calls[-1] == "load"


def test_a_tensor_that_retains_its_grad_is_accepted_as_in_torch():
    x = torch.ones(2, requires_grad=True) * 2
    x.retain_grad()
    opt = descentlab.SGD([x], lr=0.5)
    x.sum().backward()
    opt.step()
    assert x.tolist() == [1.5, 1.5]


def test_no_warning_for_a_plain_model():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        descentlab.Adam(net().parameters())
