"""Batched tensor rules get one batch per shape, wherever same-shape parameters sit in a group."""

from __future__ import annotations

import io

import pytest
import torch

import descentlab
from tests.threads import one_thread

#: a transformer-like block twice over: d×d, 4d×d and d×4d matrices, each followed by its bias
D = 32
BLOCK = [(D, D), (D,), (4 * D, D), (4 * D,), (D, 4 * D), (D,)]
SHAPES = BLOCK * 2
#: (optimizer, its setting, the parameter shapes, the relative tolerance against the reference
#: engine: Muon and SOAP compute each matrix of a stack as alone, bit for bit; Adafactor's
#: stacked sums and norms agree with its per-tensor ones to rounding, so it runs in float64)
CASES = {
    "muon": (descentlab.Muon, {"lr": 0.02}, SHAPES[::2], 0.0),
    "adafactor": (descentlab.Adafactor, {"lr": 0.01}, SHAPES, 1e-12),
    "soap": (descentlab.SOAP, {"lr": 3e-3, "precondition_frequency": 2}, SHAPES, 0.0),
}


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _params(shapes, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]


def _train(opt, params, steps, start=0):
    for t in range(start, start + steps):
        gen = torch.Generator().manual_seed(100 + t)
        opt.zero_grad()
        loss = sum(((torch.tanh(p) - torch.randn(p.shape, generator=gen, dtype=p.dtype)) ** 2)
                   .sum() for p in params)
        loss.backward()
        opt.step()


def _spy(monkeypatch, cls):
    """Record the shape of every stack the rule's ``update`` is handed."""
    rule = cls.rule
    seen = []
    original = type(rule).update

    def update(self, param, *args, **kwargs):
        seen.append(tuple(param.shape))
        return original(self, param, *args, **kwargs)

    monkeypatch.setattr(type(rule), "update", update)
    return seen


@pytest.mark.parametrize("name", sorted(CASES))
def test_interleaved_shapes_get_one_batch_per_shape_and_the_reference_engines_bits(
    monkeypatch, name
):
    cls, setting, shapes, tolerance = CASES[name]
    dtype = torch.float64 if tolerance else torch.float32
    ours, ref = _params(shapes, dtype), _params(shapes, dtype)
    opt = cls(ours, engine="flat", **setting)
    ref_opt = cls(ref, engine="reference", **setting)
    seen = _spy(monkeypatch, cls)
    _train(opt, ours, 1)
    distinct = list(dict.fromkeys(shapes))
    expected = [(shapes.count(s), *s) for s in distinct]
    assert seen == expected  # one call per shape, in the order of first appearance
    seen.clear()
    _train(opt, ours, 4, start=1)
    _train(ref_opt, ref, 5)
    for x, y in zip(ours, ref, strict=True):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=tolerance, atol=0)
    # state and checkpoints keep the parameters' order in param_groups
    assert list(opt.state_dict()["state"]) == list(range(len(shapes)))
    for i, p in enumerate(ours):
        theirs = ref_opt.state[ref[i]]
        for key, value in opt.state[p].items():
            torch.testing.assert_close(value, theirs[key], rtol=tolerance, atol=0)


def _partial_step(opt, params):
    """A step in which only the first block's matrices have a gradient."""
    opt.zero_grad()
    sum((p ** 2).sum() for p in params[:3]).backward()
    opt.step()


def test_slots_whose_step_counts_differ_are_batched_apart_with_the_same_bits(monkeypatch):
    matrices = SHAPES[::2]
    ours, ref = _params(matrices), _params(matrices)
    opt = descentlab.Muon(ours, engine="flat")
    ref_opt = descentlab.Muon(ref, engine="reference")
    _train(ref_opt, ref, 2)
    _partial_step(ref_opt, ref)
    _train(ref_opt, ref, 1, start=5)
    seen = _spy(monkeypatch, descentlab.Muon)
    _train(opt, ours, 2)
    seen.clear()
    _partial_step(opt, ours)
    assert seen == [(1, *s) for s in matrices[:3]]
    seen.clear()
    _train(opt, ours, 1, start=5)  # the first block is one step ahead: batches of one
    assert seen == [(1, *s) for s in matrices[:3] for _ in range(2)]
    for x, y in zip(ours, ref, strict=True):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["muon", "adafactor"])
def test_checkpoints_move_both_ways_with_torch_optim(name):
    cls, setting, shapes, _ = CASES[name]
    torch_cls = getattr(torch.optim, cls.__name__)
    ours, theirs = _params(shapes), _params(shapes)
    opt = cls(ours, **setting)
    torch_opt = torch_cls(theirs, **setting)
    _train(opt, ours, 3)
    _train(torch_opt, theirs, 3)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    into_torch = torch_cls(_params(shapes), **setting)
    into_torch.load_state_dict(torch.load(buffer))
    for i, p in enumerate(ours):
        for key, value in opt.state[p].items():
            got = into_torch.state[into_torch.param_groups[0]["params"][i]][key]
            torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(value),
                                       rtol=0, atol=0)
    back = cls(_params(shapes), **setting)
    back.load_state_dict(torch_opt.state_dict())
    for i, p in enumerate(theirs):
        for key, value in torch_opt.state[p].items():
            got = back.state[back.param_groups[0]["params"][i]][key]
            torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(value),
                                       rtol=0, atol=0)
