"""Adafactor on every shape torch.optim.Adafactor handles, and the ones it refuses."""

from __future__ import annotations

import pytest
import torch

import descentlab
from tests.optim.helpers import float64_default, max_rel_diff

#: matrices stacked (three of one shape), a 3-D tensor (factored over its last two dims),
#: row/column vectors, a vector and a scalar (torch divides by zero on an empty tensor)
SHAPES = [(6, 4), (6, 4), (6, 4), (3, 5, 2), (1, 9), (9, 1), (7,), ()]
SETTINGS = [{}, {"lr": 0.05, "weight_decay": 0.1},
            {"eps": (1e-20, 1e-2), "d": 2.0, "beta2_decay": -0.5, "maximize": True}]


def _run(cls, setting, dtype, **extra):
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
              for s in SHAPES]
    opt = cls(params, **setting, **extra)
    for t in range(60):
        step_gen = torch.Generator().manual_seed(100 + t)
        for p in params:
            p.grad = torch.randn(p.shape, generator=step_gen, dtype=torch.float64).to(dtype)
        opt.step()
    return params, opt


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
@pytest.mark.parametrize("engine", ["reference", "flat", "compiled"])
def test_every_shape_matches_torch_over_60_steps(engine, setting):
    with float64_default():
        ours, opt = _run(descentlab.Adafactor, setting, torch.float64, engine=engine)
        ref, ref_opt = _run(torch.optim.Adafactor, setting, torch.float64)
    assert max_rel_diff(ours, ref) <= 1e-13
    for p, q in zip(ours, ref, strict=True):  # the same state layout: row/col factors, variance
        mine, theirs = opt.state[p], ref_opt.state[q]
        assert set(mine) == set(theirs)
        for key in mine:
            assert mine[key].shape == theirs[key].shape, key
    ours32, _ = _run(descentlab.Adafactor, setting, torch.float32, engine=engine)
    ref32, _ = _run(torch.optim.Adafactor, setting, torch.float32)
    assert max_rel_diff(ours32, ref32) <= 5e-6


@pytest.mark.parametrize("engine", ["reference", "flat"])
def test_a_clamped_estimate_matches_torch(engine, monkeypatch):
    """A zero row and column of G make V̂ᵢⱼ = 0 < ε₁²: torch's entry-by-entry path is taken."""
    from descentlab.rules import adafactor

    clamped = []
    original = adafactor._step_along
    monkeypatch.setattr(adafactor, "_step_along",
                        lambda p, u, *a: clamped.append(p.dim() > 2) or original(p, u, *a))

    def run(cls, **extra):
        gen = torch.Generator().manual_seed(0)
        params = [torch.randn(6, 4, generator=gen, dtype=torch.float64).requires_grad_()
                  for _ in range(3)]
        opt = cls(params, lr=0.05, **extra)
        for t in range(20):
            step_gen = torch.Generator().manual_seed(100 + t)
            for k, p in enumerate(params):
                p.grad = torch.randn(p.shape, generator=step_gen, dtype=torch.float64)
                if k == 1:  # a row and a column never see a gradient
                    p.grad[2] = 0
                    p.grad[:, 3] = 0
            opt.step()
        return params

    with float64_default():
        ours, ref = run(descentlab.Adafactor, engine=engine), run(torch.optim.Adafactor)
    assert any(clamped)
    assert max_rel_diff(ours, ref) <= 1e-13


def test_complex_parameters_are_refused_at_construction_naming_the_shape():
    z = torch.zeros(2, 3, dtype=torch.complex64, requires_grad=True)
    with pytest.raises(ValueError, match=r"adafactor does not support complex .*\(2, 3\)"):
        descentlab.Adafactor([z])


@pytest.mark.parametrize(
    "kwargs, pattern",
    [({"eps": (-1e-30, 1e-3)}, r"eps\[0\] \(epsilon1\) must be"),
     ({"d": 0.5}, r"d \(the clipping threshold\) must be in \[1.0"),
     ({"beta2_decay": 0.8}, r"beta2_decay must be in"),
     ({"eps": 1e-3}, r"eps must be a tuple")],
)
def test_bad_arguments_are_refused_naming_them(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        descentlab.Adafactor([torch.zeros(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize("tile", [1, 5, 40, 1500], ids=lambda t: f"tile={t}")
def test_every_tiling_matches_torch(tile, monkeypatch):
    """Bands of one row, bands of several rows (a matrix larger than a tile: G² made twice),
    several whole matrices per tile with a short last tile: all torch's steps to rounding."""
    from descentlab.rules.adafactor import AdafactorRule

    monkeypatch.setattr(AdafactorRule, "tile", tile)
    shapes = [(30, 20)] * 5 + [(2, 12, 16), (2, 12, 16), (40,)]

    def run(cls, **extra):
        gen = torch.Generator().manual_seed(0)
        params = [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_()
                  for s in shapes]
        opt = cls(params, lr=0.05, weight_decay=0.1, **extra)
        for t in range(20):
            step_gen = torch.Generator().manual_seed(100 + t)
            for p in params:
                p.grad = torch.randn(p.shape, generator=step_gen, dtype=torch.float64)
            opt.step()
        return params

    with float64_default():
        ours, ref = run(descentlab.Adafactor, engine="flat"), run(torch.optim.Adafactor)
    assert max_rel_diff(ours, ref) <= 1e-13
