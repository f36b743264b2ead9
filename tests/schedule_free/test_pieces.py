"""Schedule-Free steps run piece by piece (descentlab.schedule_free.base.PIECE): the same bits.

Small pieces here, so that one tensor is sliced, neighbours are grouped, and
a non-contiguous tensor is stepped whole; the result must equal the step over
whole tensors bit for bit, and the package's class too (RAdam: its own class
with the reference's name).
"""

from __future__ import annotations

import pytest
import schedulefree
import torch

import descentlab
from descentlab.schedule_free import base

CLASSES = [
    (descentlab.SGDScheduleFree, schedulefree.SGDScheduleFree, {"lr": 0.1, "momentum": 0.8,
                                                                 "weight_decay": 0.1}),
    (descentlab.AdamWScheduleFree, schedulefree.AdamWScheduleFree, {"lr": 0.01,
                                                                     "weight_decay": 0.1}),
    (descentlab.RAdamScheduleFree, schedulefree.RAdamScheduleFree, {"lr": 0.01}),
]


def params():
    gen = torch.Generator().manual_seed(0)
    big = torch.randn(7, 9, generator=gen)
    return [t.requires_grad_() for t in (big, torch.randn(5, generator=gen),
                                         torch.randn(3, generator=gen),
                                         torch.randn(6, 4, generator=gen).t())]  # not contiguous


def trained(cls, setting, piece, monkeypatch, steps=30):
    monkeypatch.setattr(base, "PIECE", piece)
    ps = params()
    opt = cls(ps, **setting)
    opt.train()
    for t in range(steps):
        opt.zero_grad()
        gen = torch.Generator().manual_seed(t)
        sum(((p - torch.randn(p.shape, generator=gen)) ** 2 * (i + 1)).sum()
            for i, p in enumerate(ps)).backward()
        opt.step()
    opt.eval()
    return ps


@pytest.mark.parametrize(("ours", "package", "setting"), CLASSES,
                         ids=[c[0].__name__ for c in CLASSES])
def test_pieces_give_the_bits_of_whole_tensors(ours, package, setting, monkeypatch):
    monkeypatch.setattr(base, "PIECE", 8)
    pieces = base._pieces(params(), params(), [{"z": p} for p in params()])
    assert [len(ys) for ys, _, _ in pieces] == [1] * 8 + [2, 1]  # sliced, grouped, whole
    sliced = trained(ours, setting, 8, monkeypatch)
    whole = trained(ours, setting, 1 << 40, monkeypatch)
    theirs = trained(package, setting, 1 << 40, monkeypatch)
    for a, b, c in zip(sliced, whole, theirs, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
