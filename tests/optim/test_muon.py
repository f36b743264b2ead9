"""Muon against torch.optim.Muon (float32, bfloat16 Newton–Schulz), groups, resume, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import descentlab
from descentlab.engine import ENGINES
from tests.threads import one_thread

#: batched stacks (≥ 32 a side: three 48×32, two 32×64) and small ones (one by one, tall and wide)
SHAPES = [(48, 32), (48, 32), (48, 32), (32, 64), (32, 64), (8, 5), (5, 8)]
SETTINGS = [
    {},
    {"lr": 0.02, "adjust_lr_fn": "original"},
    {"lr": 0.02, "adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.01},
    {"lr": 0.01, "nesterov": False, "momentum": 0.9, "ns_steps": 3},
]


@pytest.fixture(autouse=True)
def _one_thread():
    """Small matrix products: on a busy machine waiting for a second thread costs seconds."""
    with one_thread():
        yield


def _values(dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).to(dtype) for s in SHAPES]


def _loss(params, t):
    """A coupled objective: each matrix's gradient depends on its values and the step."""
    gen = torch.Generator().manual_seed(100 + t)
    total = 0.0
    for p in params:
        target = torch.randn(p.shape, generator=gen).to(p.dtype)
        total = total + ((torch.tanh(p) - target) ** 2).sum()
    return total


def _train(opt, params, start, count):
    for t in range(start, start + count):
        opt.zero_grad()
        _loss(params, t).backward()
        opt.step()


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("setting", SETTINGS, ids=["defaults", "original", "rms", "plain"])
def test_muon_equals_torch_muon_in_float32(engine, setting):
    ours = [v.clone().requires_grad_() for v in _values()]
    ref = [v.clone().requires_grad_() for v in _values()]
    opt = descentlab.Muon(ours, engine=engine, **setting)
    torch_opt = torch.optim.Muon(ref, **setting)
    _train(opt, ours, 0, 15)
    _train(torch_opt, ref, 0, 15)
    for x, y in zip(ours, ref, strict=True):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=0, atol=0)  # the same bits


def test_the_flat_engine_batches_same_shape_neighbours(monkeypatch):
    from descentlab.rules import muon as muon_rule

    seen = []
    original = muon_rule.newton_schulz

    def spy(g, *args, **kwargs):
        seen.append(tuple(g.shape))
        return original(g, *args, **kwargs)

    monkeypatch.setattr(muon_rule, "newton_schulz", spy)
    params = [v.clone().requires_grad_() for v in _values()]
    opt = descentlab.Muon(params, engine="flat")
    _train(opt, params, 0, 1)
    assert (3, 48, 32) in seen and (2, 32, 64) in seen


def test_muon_with_adamw_groups_equals_torch_side_by_side():
    torch.manual_seed(0)
    matrices = [torch.randn(40, 32) for _ in range(3)]
    others = [torch.randn(32), torch.randn(2, 3, 4)]
    ours = [v.clone().requires_grad_() for v in matrices + others]
    ref = [v.clone().requires_grad_() for v in matrices + others]
    opt = descentlab.Muon([
        {"params": ours[:3], "lr": 0.02},
        {"params": ours[3:], "rule": "adamw", "lr": 3e-3},
    ])
    assert opt.param_groups[1]["weight_decay"] == 1e-2  # AdamW's default, not Muon's 0.1
    assert "ns_steps" not in opt.param_groups[1]
    torch_muon = torch.optim.Muon(ref[:3], lr=0.02)
    torch_adamw = torch.optim.AdamW(ref[3:], lr=3e-3, foreach=False)
    for t in range(20):
        for o in (opt, torch_muon, torch_adamw):
            o.zero_grad()
        _loss(ours, t).backward()
        _loss(ref, t).backward()
        opt.step()
        torch_muon.step()
        torch_adamw.step()
    for x, y in zip(ours[:3], ref[:3], strict=True):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=0, atol=0)
    for x, y in zip(ours[3:], ref[3:], strict=True):  # the parity suite's float32 bound
        assert ((x - y).abs().max() / y.abs().max()).item() <= 5e-6


@pytest.mark.parametrize("engine", ["reference", "flat"])
def test_resume_from_a_state_dict_continues_bit_identically(engine):
    def build(params):
        return descentlab.Muon([
            {"params": params[:5], "lr": 0.02},
            {"params": params[5:], "rule": "adamw"},
        ], engine=engine)

    straight = [v.clone().requires_grad_() for v in _values()]
    opt = build(straight)
    _train(opt, straight, 0, 12)
    resumed = [v.clone().requires_grad_() for v in _values()]
    first = build(resumed)
    _train(first, resumed, 0, 6)
    saved = first.state_dict()
    assert [g.get("rule") for g in saved["param_groups"]] == [None, "adamw"]
    copies = [p.detach().clone().requires_grad_() for p in resumed]
    second = build(copies)
    second.load_state_dict(saved)
    _train(second, copies, 6, 6)
    for x, y in zip(copies, straight, strict=True):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=0, atol=0)


def test_a_torch_muon_checkpoint_loads_and_continues_as_torch():
    ref = [v.clone().requires_grad_() for v in _values()]
    torch_opt = torch.optim.Muon(ref, lr=0.02)
    _train(torch_opt, ref, 0, 5)
    ours = [p.detach().clone().requires_grad_() for p in ref]
    opt = descentlab.Muon(ours, lr=0.02)
    opt.load_state_dict(torch_opt.state_dict())
    _train(torch_opt, ref, 5, 5)
    _train(opt, ours, 5, 5)
    for x, y in zip(ours, ref, strict=True):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=0, atol=0)


def test_precision_is_a_keyword():
    values = [torch.randn(64, 48, generator=torch.Generator().manual_seed(3))]
    results = {}
    for ns_dtype in ("bfloat16", "float64"):
        p = [values[0].clone().double().requires_grad_()]
        opt = descentlab.Muon(p, lr=1.0, weight_decay=0.0, momentum=0.0, nesterov=False,
                              ns_dtype=ns_dtype, ns_steps=30)
        p[0].grad = values[0].double()
        opt.step()
        results[ns_dtype] = values[0].double() - p[0].detach()  # = √(64/48) · NS(g)
    for update in results.values():
        s = torch.linalg.svdvals(update / (64 / 48) ** 0.5)
        assert 0.6 < s.min() and s.max() < 1.3  # an approximate orthogonalisation
    assert not torch.equal(results["bfloat16"], results["float64"])
    with pytest.raises(ValueError, match="ns_dtype must be one of"):
        descentlab.Muon([torch.zeros(2, 2, requires_grad=True)], ns_dtype="float16")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -1.0}, "lr must be a finite number >= 0, got -1.0"),
        ({"momentum": -0.5}, "momentum must be"),
        ({"adjust_lr_fn": "sqrt"}, "adjust_lr_fn must be one of"),
        ({"ns_steps": 100}, "ns_steps must be < 100"),
        ({"ns_coefficients": (1.0, 2.0)}, "ns_coefficients must be a tuple of 3 numbers"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        descentlab.Muon([torch.zeros(2, 2, requires_grad=True)], **kwargs)


def test_parameters_muon_cannot_handle_are_refused_at_construction():
    conv = torch.zeros(8, 3, 3, 3, requires_grad=True)
    with pytest.raises(ValueError, match=r"2-D parameters, got one of shape \(8, 3, 3, 3\).*adamw"):
        descentlab.Muon([torch.zeros(4, 4, requires_grad=True), conv])
    opt = descentlab.Muon([torch.zeros(4, 4, requires_grad=True)])
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        opt.add_param_group({"params": [torch.zeros(5, requires_grad=True)]})
    opt.add_param_group({"params": [torch.zeros(5, requires_grad=True)], "rule": "adamw"})
    with pytest.raises(ValueError, match="complex"):
        descentlab.Muon([torch.zeros(4, 4, dtype=torch.complex64, requires_grad=True)])


class _TinyLM(nn.Module):
    def __init__(self, vocab=50, d=32):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(16, d))
        self.conv = nn.Conv1d(d, d, 3, padding=1)
        self.block = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.GELU(),
                                   nn.Linear(4 * d, d))
        self.attn = nn.MultiheadAttention(d, 4, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.embed.weight  # tied

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        x = x + self.conv(x.transpose(1, 2)).transpose(1, 2)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return self.head(self.norm(x + self.block(x)))


def test_muon_param_groups_route_by_structure():
    model = _TinyLM()
    groups = descentlab.muon_param_groups(model, lr=0.02, adamw_lr=3e-4)
    rules = {name: (rule, why) for name, _, _, rule, why in groups.choices}
    assert rules["block.1.weight"][0] == rules["block.3.weight"][0] == "muon"
    assert rules["attn.in_proj_weight"][0] == rules["attn.out_proj.weight"][0] == "muon"
    assert rules["embed.weight"] == ("adamw", "embedding (shared by 2 modules)")  # the tied head
    for name in ("pos", "conv.weight", "conv.bias", "block.0.weight", "block.1.bias",
                 "norm.weight", "attn.in_proj_bias"):
        assert rules[name][0] == "adamw", name
    muon_group, adamw_group = groups
    assert muon_group["rule"] == "muon" and muon_group["lr"] == 0.02
    assert adamw_group == {"params": adamw_group["params"], "rule": "adamw", "lr": 3e-4}
    table = groups.table()
    assert table.splitlines()[0].split() == ["parameter", "shape", "module", "rule", "why"]
    assert "hidden linear layer" in table
    opt = descentlab.Muon(groups)
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)
    model(torch.randint(0, 50, (2, 8))).sum().backward()
    opt.step()


def test_an_untied_head_is_the_last_linear_layer_or_the_one_named():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Linear(16, 4))
    rules = {n: r for n, _, _, r, _ in descentlab.muon_param_groups(model).choices}
    assert rules == {"0.weight": "muon", "0.bias": "adamw", "2.weight": "muon",
                     "2.bias": "adamw", "3.weight": "adamw", "3.bias": "adamw"}
    named = descentlab.muon_param_groups(model, head="2")
    assert {n: r for n, _, _, r, _ in named.choices}["3.weight"] == "muon"
    with pytest.raises(ValueError, match="head='nope' is not a sub-module"):
        descentlab.muon_param_groups(model, head="nope")
