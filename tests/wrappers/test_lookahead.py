"""Lookahead against pytorch_optimizer's Lookahead, by hand, and its options."""

from __future__ import annotations

import copy
import warnings

import pytest
import pytorch_optimizer
import torch

import descentlab
from descentlab.wrappers import SAM, Lookahead
from tests.wrappers.helpers import make_closure, max_rel_diff, network, train, weights

SGD_MOMENTUM = (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.1})
BASES = {  # name: (ours, the reference's base, arguments)
    "sgd_momentum": (torch.optim.SGD, *SGD_MOMENTUM),
    "adamw": (torch.optim.AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    "descentlab_adamw": (descentlab.AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    "descentlab_sgd": (descentlab.SGD, *SGD_MOMENTUM),
}


def run(wrap, base, kwargs, steps=60, **options):
    model = network()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pullback options over AdamW warn (tested below)
        opt = wrap(base(model.parameters(), **kwargs), k=5, alpha=0.6, **options)
    train(opt, model, range(steps), protocol="plain")
    return weights(model)


@pytest.mark.parametrize("pullback", ["none", "reset", "pullback"])
@pytest.mark.parametrize("base", sorted(BASES))
def test_parity_with_pytorch_optimizer(base, pullback):
    ours_cls, ref_cls, kwargs = BASES[base]
    ref = run(pytorch_optimizer.Lookahead, ref_cls, kwargs, pullback_momentum=pullback)
    ours = run(Lookahead, ours_cls, kwargs, pullback_momentum=pullback)
    assert max_rel_diff(ours, ref) <= 1e-12


def test_the_options_change_the_trajectory_of_momentum_sgd():
    runs = {pb: run(Lookahead, *SGD_MOMENTUM, pullback_momentum=pb)
            for pb in ("none", "reset", "pullback")}
    alone = network()
    train(SGD_MOMENTUM[0](alone.parameters(), **SGD_MOMENTUM[1]), alone, range(60), "plain")
    assert min(max_rel_diff(runs["none"], runs["reset"]),
               max_rel_diff(runs["none"], runs["pullback"]),
               max_rel_diff(runs["reset"], runs["pullback"]),
               max_rel_diff(runs["none"], weights(alone))) > 1e-3


def test_synchronisation_by_hand():
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = Lookahead(torch.optim.SGD([w], lr=0.1), k=3, alpha=0.25)
    fast = w.detach().clone()
    for t in range(7):
        opt.zero_grad()
        (w ** 2).sum().backward()
        opt.step()
        fast = fast - 0.1 * 2 * fast
        if t == 2:  # the slow weights move a quarter of the way, the fast restart there
            fast = torch.tensor([1.0, -2.0]) + 0.25 * (fast - torch.tensor([1.0, -2.0]))
            slow = fast.clone()
        if t == 5:
            fast = slow + 0.25 * (fast - slow)
        torch.testing.assert_close(w.detach(), fast, rtol=1e-15, atol=0)
    assert opt.counters == [1]


def test_built_from_a_class_and_counters_per_group():
    model = network()
    opt = Lookahead(torch.optim.AdamW, params=model.parameters(), lr=0.01, k=2)
    assert isinstance(opt.optimizer, torch.optim.AdamW) and opt.k == 2
    train(opt, model, range(3), protocol="plain")
    opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)]})
    assert opt.counters == [1, 0]


def test_slow_weights_are_taken_at_the_first_step():
    model, loaded = network(seed=0), network(seed=1)
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=1, alpha=0.0)
    model.load_state_dict(loaded.state_dict())  # after building the optimizer
    train(opt, model, range(1), protocol="plain")
    assert all(torch.equal(a, b) for a, b in zip(weights(model), weights(loaded), strict=True))


def test_evaluating_at_the_slow_weights():
    model = network()
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=5)
    start = weights(model)
    train(opt, model, range(3), protocol="plain")
    fast = weights(model)
    opt.backup_and_load_cache()
    assert all(torch.equal(a, b) for a, b in zip(weights(model), start, strict=True))
    opt.clear_and_load_backup()
    assert all(torch.equal(a, b) for a, b in zip(weights(model), fast, strict=True))
    with pytest.raises(RuntimeError, match="without backup_and_load_cache"):
        opt.clear_and_load_backup()


def test_over_sam_with_a_closure():
    model, twin = network(), network()
    opt = Lookahead(SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9), k=3)
    ref = pytorch_optimizer.Lookahead(
        pytorch_optimizer.SAM(twin.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9), k=3)
    calls: list[int] = []
    for t in range(7):
        opt.step(make_closure(opt, model, t, calls))
    train(ref, twin, range(7), protocol="backward")
    assert len(calls) == 14
    # the reference rounds SAM's norm to float32 (see test_sam): float32-accurate agreement
    assert max_rel_diff(weights(model), weights(twin)) < 1e-6


def test_pytorch_optimizer_state_dict_loads_and_continues_identically():
    model, twin = network(), network()
    ref = pytorch_optimizer.Lookahead(torch.optim.SGD(model.parameters(), **SGD_MOMENTUM[1]),
                                      k=5, pullback_momentum="pullback")
    train(ref, model, range(7), protocol="plain")
    twin.load_state_dict(model.state_dict())
    ours = Lookahead(torch.optim.SGD(twin.parameters(), **SGD_MOMENTUM[1]), k=5,
                     pullback_momentum="pullback")
    ours.load_state_dict(copy.deepcopy(ref.state_dict()))  # torch shares loaded tensors
    assert ours.counters == [2] and "counter" not in ours.param_groups[0]
    train(ref, model, range(7, 20), protocol="plain")
    train(ours, twin, range(7, 20), protocol="plain")
    assert all(torch.equal(a, b) for a, b in zip(weights(model), weights(twin), strict=True))


def test_pullback_without_a_momentum_buffer_warns():
    params = list(network().parameters())
    with pytest.warns(UserWarning, match="has no effect on AdamW: it keeps no momentum_buffer"):
        Lookahead(torch.optim.AdamW(params), pullback_momentum="reset")


def test_bad_arguments_are_refused_with_their_values():
    params = list(network().parameters())
    sgd = torch.optim.SGD(params, lr=0.1)
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        Lookahead(sgd, k=0)
    with pytest.raises(TypeError, match="k must be an integer, got 2.5"):
        Lookahead(sgd, k=2.5)
    with pytest.raises(ValueError, match=r"alpha must be in \[0.0, 1.0\], got 1.5"):
        Lookahead(sgd, alpha=1.5)
    with pytest.raises(ValueError, match="pullback_momentum must be one of .* got 'back'"):
        Lookahead(sgd, pullback_momentum="back")
    with pytest.raises(TypeError, match=r"arguments \['lr'\] with an optimizer instance"):
        Lookahead(sgd, lr=0.1)
    with pytest.raises(TypeError, match="needs params="):
        Lookahead(torch.optim.SGD, lr=0.1)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer or its class"):
        Lookahead("sgd")
