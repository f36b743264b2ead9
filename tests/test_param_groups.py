"""Weight-decay masks by module type."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import descentlab
from descentlab.param_groups import NORM_LAYERS, weight_decay_mask, weight_decay_param_groups


class ScaleNorm(nn.Module):
    """A hand-written norm layer: torch does not know it is one."""

    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return self.weight * x / x.norm(dim=-1, keepdim=True)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm1d(8)  # no "norm" in the name: name guessing would miss it
        self.normal_proj = nn.Linear(8, 8, bias=False)  # "norm" in the name, but a Linear
        self.ln = nn.LayerNorm(8)
        self.gn = nn.GroupNorm(2, 8)
        self.rms = nn.RMSNorm(8)
        self.attn = nn.MultiheadAttention(8, 2)
        self.lstm = nn.LSTM(8, 4)
        self.scale = ScaleNorm(8)
        self.wn = nn.utils.parametrizations.weight_norm(nn.Linear(8, 8))
        self.head = nn.Linear(8, 10)
        self.head.weight = self.embed.weight  # tied weights
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)


EXPECTED_EXEMPT = {
    "conv.bias", "bn1.weight", "bn1.bias", "ln.weight", "ln.bias", "gn.weight", "gn.bias",
    "rms.weight", "attn.in_proj_bias", "attn.out_proj.bias", "lstm.bias_ih_l0",
    "lstm.bias_hh_l0", "wn.bias", "head.bias",
}
EXPECTED_DECAY = {
    "embed.weight", "conv.weight", "normal_proj.weight", "attn.in_proj_weight",
    "attn.out_proj.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "scale.weight",
    "wn.parametrizations.weight.original0", "wn.parametrizations.weight.original1",
}


def test_mask_by_module_type():
    mask = weight_decay_mask(Net())
    assert {n for n, d in mask.items() if not d} == EXPECTED_EXEMPT
    assert {n for n, d in mask.items() if d} == EXPECTED_DECAY
    assert "frozen.weight" not in mask and "head.weight" not in mask  # frozen; tied (once)


def test_options():
    net = Net()
    mask = weight_decay_mask(net, norm_types=NORM_LAYERS + (ScaleNorm,), exclude_embeddings=True)
    assert not mask["scale.weight"] and not mask["embed.weight"]  # tied head weight too
    mask = weight_decay_mask(net, exclude_bias=False)
    assert mask["conv.bias"] and mask["lstm.bias_ih_l0"] and not mask["ln.bias"]
    mask = weight_decay_mask(net, exclude_norm=False)
    assert mask["ln.weight"] and not mask["ln.bias"]


def test_groups_feed_any_optimizer_and_decay_only_the_mask():
    net = Net()
    groups = weight_decay_param_groups(net, 0.1, lr=0.01)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert all(g["lr"] == 0.01 for g in groups)
    ids = [{id(p) for p in g["params"]} for g in groups]
    named = dict(net.named_parameters())
    assert ids[0] == {id(named[n]) for n in EXPECTED_DECAY}
    assert ids[1] == {id(named[n]) for n in EXPECTED_EXEMPT}
    for make in (torch.optim.AdamW, descentlab.AdamW):
        opt = make(weight_decay_param_groups(net, 0.1), lr=0.01)
        for p in net.parameters():
            p.grad = torch.zeros_like(p)  # zero gradient: only decay moves a parameter
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        opt.step()
        for n, p in net.named_parameters():
            moved = not torch.equal(before[n], p)
            assert moved == (n in EXPECTED_DECAY and before[n].abs().sum() > 0), n


def test_errors():
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0, got -1"):
        weight_decay_param_groups(Net(), -1)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        weight_decay_mask([nn.Parameter(torch.ones(1))])
    with pytest.raises(ValueError, match="no trainable parameters"):
        weight_decay_param_groups(nn.ReLU(), 0.1)
