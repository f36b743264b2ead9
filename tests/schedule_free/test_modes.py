"""Schedule-Free's train/eval modes, checkpoints in either mode, evaluation helpers, BatchNorm."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import descentlab
from descentlab.schedule_free import evaluation_mode, recompute_batchnorm, start_training
from tests.optim.helpers import loss_fn, make_params, max_rel_diff

CLASSES = [descentlab.SGDScheduleFree, descentlab.AdamWScheduleFree, descentlab.RAdamScheduleFree]
SETTINGS = {
    descentlab.SGDScheduleFree: {"lr": 0.1, "weight_decay": 0.1, "warmup_steps": 5},
    descentlab.AdamWScheduleFree: {"lr": 0.01, "weight_decay": 0.1, "warmup_steps": 5},
    descentlab.RAdamScheduleFree: {"lr": 0.01, "weight_decay": 0.1},
}
IDS = [c.__name__ for c in CLASSES]


def run(opt, params, start, count):
    for t in range(start, start + count):
        opt.zero_grad()
        loss_fn(params, t).backward()
        opt.step()


def trained(cls, steps):
    params = make_params()
    opt = cls(params, **SETTINGS[cls])
    opt.train()
    run(opt, params, 0, steps)
    return params, opt


def values(params):
    return [p.detach().clone() for p in params]


def saved(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_starts_in_eval_mode_and_refuses_to_step_there(cls):
    params = make_params()
    opt = cls(params)
    assert not opt.training
    loss_fn(params, 0).backward()
    with pytest.raises(RuntimeError, match=r"eval mode: call optimizer.train\(\)"):
        opt.step()
    opt.train()
    opt.step()
    assert opt.training


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_every_group_must_be_in_train_mode(cls):
    w, b, s = make_params()
    opt = cls([{"params": [w]}, {"params": [b, s]}])
    opt.train()
    opt.param_groups[1]["train_mode"] = False  # the reference looks at the first group only
    loss_fn([w, b, s], 0).backward()
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step()


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_modes_switch_once_and_round_trip_to_rounding(cls):
    params, opt = trained(cls, 20)
    y = values(params)
    opt.train()  # already in train mode: nothing moves
    assert all(torch.equal(a, b) for a, b in zip(params, y, strict=True))
    opt.eval()
    x = values(params)
    opt.eval()
    assert all(torch.equal(a, b) for a, b in zip(params, x, strict=True))
    assert max_rel_diff(x, y) > 1e-6  # the average really is another point
    opt.train()
    assert max_rel_diff(values(params), y) <= 1e-14


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_checkpoint_taken_in_train_mode(cls):
    """Saved in train mode, the weights are y: resume is bit-identical, eval() gives the same x."""
    full, opt_full = trained(cls, 30)
    part, opt = trained(cls, 20)
    checkpoint = saved({"model": values(part), "optimizer": opt.state_dict()})
    params = [t.requires_grad_() for t in checkpoint["model"]]
    resumed = cls(params, **SETTINGS[cls])  # a fresh optimizer starts in eval mode ...
    resumed.load_state_dict(checkpoint["optimizer"])
    assert resumed.training  # ... the checkpoint's mode is restored with its state
    run(resumed, params, 20, 10)
    assert all(torch.equal(a, b) for a, b in zip(params, full, strict=True))
    opt_full.eval()
    resumed.eval()
    assert all(torch.equal(a, b) for a, b in zip(params, full, strict=True))


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_checkpoint_taken_in_eval_mode(cls):
    """Saved in eval mode (the weights are x): after train() it resumes as the original does."""
    full, opt_full = trained(cls, 20)
    opt_full.eval()
    checkpoint = saved({"model": values(full), "optimizer": opt_full.state_dict()})
    opt_full.train()
    run(opt_full, full, 20, 10)

    params = [t.requires_grad_() for t in checkpoint["model"]]
    resumed = cls(params, **SETTINGS[cls])
    resumed.train()  # nothing to move yet (no state), the flag only
    resumed.load_state_dict(checkpoint["optimizer"])
    assert not resumed.training  # the checkpoint's eval mode wins
    with pytest.raises(RuntimeError, match="eval mode"):
        loss_fn(params, 20).backward()
        resumed.step()
    resumed.train()
    run(resumed, params, 20, 10)
    assert all(torch.equal(a, b) for a, b in zip(params, full, strict=True))


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_evaluation_mode_gives_x_and_puts_y_back_bit_for_bit(cls):
    params, opt = trained(cls, 20)
    y = values(params)
    twin, twin_opt = trained(cls, 20)
    twin_opt.eval()
    with evaluation_mode(opt):
        assert not opt.training
        assert all(torch.equal(a, b) for a, b in zip(params, twin, strict=True))
    assert opt.training and all(torch.equal(a, b) for a, b in zip(params, y, strict=True))
    # evaluating inside a run changes nothing about the run
    run(opt, params, 20, 10)
    uninterrupted, _ = trained(cls, 30)
    assert all(torch.equal(a, b) for a, b in zip(params, uninterrupted, strict=True))


def test_evaluation_helpers_pass_through_optimizers_without_modes_and_wrappers():
    params = make_params()
    adam = descentlab.Adam(params)
    start_training(adam)
    with evaluation_mode(adam):
        pass
    sf_params, sf = trained(descentlab.AdamWScheduleFree, 10)
    guarded = descentlab.NonFiniteGuard(sf)
    y = values(sf_params)
    with evaluation_mode(guarded):
        assert not sf.training and max_rel_diff(values(sf_params), y) > 1e-6
    assert sf.training and all(torch.equal(a, b) for a, b in zip(sf_params, y, strict=True))


def test_eval_mode_is_left_alone_by_evaluation_mode():
    params, opt = trained(descentlab.SGDScheduleFree, 10)
    opt.eval()
    x = values(params)
    with evaluation_mode(opt):
        pass
    assert not opt.training and all(torch.equal(a, b) for a, b in zip(params, x, strict=True))


def _bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 1)).double()


def test_recompute_batchnorm_gives_the_statistics_at_x():
    model = _bn_model()
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(16, 4, generator=gen, dtype=torch.float64),
             torch.randn(16, 1, generator=gen, dtype=torch.float64)) for _ in range(8)]
    opt = descentlab.SGDScheduleFree(model.parameters(), lr=0.5)
    opt.train()
    model.train()
    for x, y in data * 3:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    model.eval()
    recompute_batchnorm(model, opt, data)
    assert not opt.training and not model.training
    # by hand: the first layer's outputs at x; update_bn averages the batches' means and
    # unbiased variances (equal batch sizes here)
    with torch.no_grad():
        hs = [model[0](x) for x, _ in data]
    h = torch.cat(hs)
    bn = model[1]
    assert torch.allclose(bn.running_mean, h.mean(0), rtol=1e-12, atol=1e-14)
    batch_var = torch.stack([b.var(0, unbiased=True) for b in hs]).mean(0)
    assert torch.allclose(bn.running_var, batch_var, rtol=1e-12, atol=1e-14)
    # they differ from the statistics at the training point y
    opt.train()
    with torch.no_grad():
        h_y = torch.cat([model[0](x) for x, _ in data])
    assert (h_y.mean(0) - h.mean(0)).abs().max() > 1e-4


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_complex_parameters_step_as_their_real_view(cls):
    z = torch.randn(3, dtype=torch.complex128, requires_grad=True)
    r = torch.view_as_real(z.detach()).clone().requires_grad_()
    oz, orr = cls([z], lr=0.01), cls([r], lr=0.01)
    oz.train()
    orr.train()
    for t in range(5):
        for opt, loss in ((oz, lambda t=t: (z.abs() ** 2 * (t + 1)).sum()),
                          (orr, lambda t=t: ((r**2).sum(-1) * (t + 1)).sum())):
            opt.zero_grad()
            loss().backward()
            opt.step()
    assert torch.allclose(torch.view_as_real(z.detach()), r.detach(), rtol=1e-14, atol=0)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_sparse_gradients_are_refused(cls):
    emb = nn.Embedding(5, 2, sparse=True)
    opt = cls(emb.parameters())
    opt.train()
    emb(torch.tensor([1, 2])).sum().backward()
    before = dict(opt.param_groups[0])
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()
    assert opt.param_groups[0] == before and not any(opt.state.values())  # nothing moved


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (descentlab.SGDScheduleFree, {"momentum": 0.0}, r"momentum must be in \(0.0, 1.0\)"),
        (descentlab.SGDScheduleFree, {"momentum": 1.0}, r"momentum must be in \(0.0, 1.0\)"),
        (descentlab.SGDScheduleFree, {"lr": -1.0}, r"lr must be a finite number >= 0"),
        (descentlab.SGDScheduleFree, {"warmup_steps": -1}, r"warmup_steps must be an integer"),
        (descentlab.AdamWScheduleFree, {"betas": (0.0, 0.999)}, r"betas\[0\] must be in \(0"),
        (descentlab.AdamWScheduleFree, {"betas": (0.9, 1.0)}, r"betas\[1\] must be in \[0"),
        (descentlab.AdamWScheduleFree, {"eps": -1e-8}, r"eps must be"),
        (descentlab.RAdamScheduleFree, {"weight_decay": -0.1}, r"weight_decay must be"),
        (descentlab.RAdamScheduleFree, {"r": float("nan")}, r"r must be"),
    ],
)
def test_bad_arguments_are_refused_naming_them(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(make_params(), **kwargs)
    opt = cls(make_params())
    with pytest.raises(ValueError, match=match):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], **kwargs})


def test_warmup_steps_must_be_an_integer():
    with pytest.raises(TypeError, match=r"warmup_steps must be an integer, got 1.5"):
        descentlab.AdamWScheduleFree(make_params(), warmup_steps=1.5)
