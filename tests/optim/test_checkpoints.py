"""Checkpoints both ways: torch.optim's state dicts continue in descentlab, and ours in torch.

Every case trains 30 steps, saves, loads into a fresh optimizer (of the other
library, or of torch for the reference) and trains 50 more steps in float64;
the two continuations must agree to 1e-12 relative. The torch side of each
comparison is torch.optim loading the very same state dict, so a layout that
torch reads in its own way (a group key it fills in) is compared with what
torch itself does with it.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch

from tests.optim.engines import ENGINES_UNDER_TEST
from tests.optim.helpers import (
    clones,
    float64_default,
    make_params,
    max_rel_diff,
    run_steps,
    sign_of,
)
from tests.optim.infos import INFOS

IDS = [info.name for info in INFOS]
BEFORE, AFTER = 30, 50

#: Group keys added to torch.optim after each optimizer first shipped, which torch's own
#: ``__setstate__`` fills in when an older checkpoint lacks them (torch 2.13's source).
LEGACY_KEYS = {
    "SGD": ("nesterov", "maximize", "foreach", "differentiable", "fused"),
    "Adagrad": ("foreach", "maximize", "differentiable", "fused", "initial_accumulator_value"),
    "RMSprop": ("momentum", "centered", "foreach", "maximize", "differentiable", "capturable"),
    "Adadelta": ("foreach", "maximize", "differentiable", "capturable"),
    "Adam": ("amsgrad", "maximize", "foreach", "capturable", "differentiable", "fused",
             "decoupled_weight_decay"),
    "AdamW": ("amsgrad", "maximize", "foreach", "capturable", "differentiable", "fused",
              "decoupled_weight_decay"),
    "NAdam": ("maximize", "foreach", "capturable", "differentiable", "decoupled_weight_decay"),
    "RAdam": ("foreach", "maximize", "differentiable", "capturable", "decoupled_weight_decay"),
    "Adamax": ("foreach", "maximize", "differentiable", "capturable"),
    "ASGD": ("foreach", "maximize", "differentiable", "capturable"),
    "Rprop": ("foreach", "maximize", "differentiable", "capturable"),
    "Adafactor": ("foreach",),
}


def richest(info):
    """The setting with the most options set (most state and group keys to carry)."""
    return max(info.settings, key=len)


def legacy_layout(state_dict: dict, cls_name: str) -> dict:
    """An older checkpoint's layout: the later group keys removed, ``step`` a Python number."""
    old = copy.deepcopy(state_dict)
    removed = 0
    for group in old["param_groups"]:
        for key in LEGACY_KEYS[cls_name]:
            removed += key in group
            group.pop(key, None)
    assert removed, f"nothing to remove from {cls_name}'s groups"
    return numeric_steps(old)


def numeric_steps(state_dict: dict) -> dict:
    """The same state dict with every tensor ``step`` as a Python float (older torch)."""
    out = copy.deepcopy(state_dict)
    for state in out["state"].values():
        if isinstance(state.get("step"), torch.Tensor):
            state["step"] = state["step"].item()
    return out


def weights_only_round_trip(state_dict: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def continue_from(cls, state_dict, params, setting, **extra):
    """A fresh ``cls`` over copies of ``params``: loads ``state_dict``, trains AFTER steps."""
    params = clones(params)
    opt = cls(params, **setting, **extra)
    opt.load_state_dict(copy.deepcopy(state_dict))
    run_steps(opt, params, BEFORE, AFTER, sign_of(setting))
    return params, opt


LAYOUTS = {
    "current": lambda sd, name: sd,
    "legacy": legacy_layout,
    "numeric-step": lambda sd, name: numeric_steps(sd),
}


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_torch_checkpoint_continues_in_descentlab_as_in_torch(info, layout, engine):
    setting = richest(info)
    with float64_default():
        params = make_params()
        torch_opt = info.torch_cls(params, **setting)
        run_steps(torch_opt, params, 0, BEFORE, sign_of(setting))
        saved = LAYOUTS[layout](weights_only_round_trip(torch_opt.state_dict()),
                                info.torch_cls.__name__)
        theirs, _ = continue_from(info.torch_cls, saved, params, setting)
        ours, opt = continue_from(info.ours, saved, params, setting, engine=engine)
        run_steps(torch_opt, params, BEFORE, AFTER, sign_of(setting))  # torch, uninterrupted
    assert max_rel_diff(ours, theirs) <= 1e-12
    if layout == "current":
        assert max_rel_diff(ours, params) <= 1e-12
    assert all(isinstance(s["step"], torch.Tensor) for s in opt.state.values())
    assert set(opt.param_groups[0]) >= set(opt.defaults)  # every key filled


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_descentlab_checkpoint_continues_in_torch_as_in_descentlab(info, engine):
    setting = richest(info)
    with float64_default():
        params = make_params()
        opt = info.ours(params, **setting, engine=engine)
        run_steps(opt, params, 0, BEFORE, sign_of(setting))
        saved = weights_only_round_trip(opt.state_dict())
        theirs, torch_opt = continue_from(info.torch_cls, saved, params, setting)
        resumed, _ = continue_from(info.ours, saved, params, setting, engine=engine)
        run_steps(opt, params, BEFORE, AFTER, sign_of(setting))  # ours, uninterrupted
    assert max_rel_diff(theirs, params) <= 1e-12
    assert max_rel_diff(resumed, params) <= 1e-12
    assert type(torch_opt) is info.torch_cls


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_a_loaded_state_dict_saves_back_unchanged(info, engine):
    """torch's determinism check: equal (not identical) parameters, equal state dicts."""
    setting = richest(info)
    params = make_params()
    opt = info.ours(params, **setting, engine=engine)
    run_steps(opt, params, 0, 5, sign_of(setting))
    saved = opt.state_dict()
    twin = info.ours(clones(params), **setting, engine=engine)
    twin.load_state_dict(copy.deepcopy(saved))
    again = twin.state_dict()
    assert again["param_groups"] == saved["param_groups"]
    for i, state in saved["state"].items():
        assert state.keys() == again["state"][i].keys()
        assert all(torch.equal(v, again["state"][i][k]) for k, v in state.items())


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
def test_our_own_keys_get_their_defaults_and_do_not_disturb_torch(engine):
    """momentum_form is ours alone: missing, it is heavy-ball; present, torch ignores it."""
    import descentlab

    setting = {"lr": 0.05, "momentum": 0.9, "nesterov": True}
    with float64_default():
        params = make_params()
        opt = descentlab.SGD(params, **setting, engine=engine)
        run_steps(opt, params, 0, BEFORE)
        saved = opt.state_dict()
        assert saved["param_groups"][0]["momentum_form"] == "heavy_ball"
        stripped = copy.deepcopy(saved)
        del stripped["param_groups"][0]["momentum_form"]
        mine, resumed = continue_from(descentlab.SGD, stripped, params, setting, engine=engine)
        theirs, _ = continue_from(torch.optim.SGD, saved, params, setting)
    assert resumed.param_groups[0]["momentum_form"] == "heavy_ball"
    assert max_rel_diff(mine, theirs) <= 1e-12


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("saved_by", ["torch", "descentlab"])
def test_adamw_loading_an_adam_checkpoint_decays_decoupled_as_torchs(saved_by, engine):
    """torch's AdamW sets decoupled_weight_decay back to True on every load; so does ours."""
    import descentlab

    setting = {"lr": 0.05, "weight_decay": 0.5}
    with float64_default():
        params = make_params()
        adam = (torch.optim.Adam if saved_by == "torch" else descentlab.Adam)(params, **setting)
        run_steps(adam, params, 0, BEFORE)
        saved = adam.state_dict()
        assert saved["param_groups"][0]["decoupled_weight_decay"] is False
        mine, resumed = continue_from(descentlab.AdamW, saved, params, setting, engine=engine)
        theirs, _ = continue_from(torch.optim.AdamW, saved, params, setting)
    assert resumed.param_groups[0]["decoupled_weight_decay"] is True
    assert max_rel_diff(mine, theirs) <= 1e-12


def test_torch_sgd_checkpoint_without_step_or_with_a_sparse_buffer():
    """torch's SGD keeps no step, and a sparse momentum buffer after sparse gradients."""
    import descentlab

    with float64_default():
        weight = torch.randn(6, 3)
        results = []
        for cls in (torch.optim.SGD, descentlab.SGD):
            emb = torch.nn.Embedding(6, 3, sparse=True, _weight=weight.clone())
            opt = torch.optim.SGD(emb.parameters(), lr=0.1, momentum=0.9)
            for t in range(3):
                opt.zero_grad()
                emb(torch.tensor([t, 2, 4])).pow(2).sum().backward()
                opt.step()
            saved = opt.state_dict()
            assert "step" not in saved["state"][0]
            assert saved["state"][0]["momentum_buffer"].is_sparse
            resumed = cls(emb.parameters(), lr=0.1, momentum=0.9)
            resumed.load_state_dict(saved)
            for t in range(3, 8):
                resumed.zero_grad()
                emb(torch.tensor([t % 6, 1])).pow(2).sum().backward()
                resumed.step()
            results.append(emb.weight.detach().clone())
    assert max_rel_diff([results[1]], [results[0]]) <= 1e-12
