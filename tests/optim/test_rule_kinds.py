"""Rule kinds: elementwise rules are elementwise; tensor rules see whole tensors everywhere."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import descentlab
from descentlab.engine import ENGINES, describe
from descentlab.engine.kernels import get_kernel
from descentlab.optim.base import RuleOptimizer
from descentlab.rules import RULES, register_rule
from descentlab.rules.base import ELEMENTWISE, TENSOR, HParam, Rule, TensorRule
from descentlab.validation import check_nonnegative
from tests.optim.infos import INFOS, MATRIX_INFOS
from tests.optim.package_infos import PACKAGE_INFOS
from tests.optim.test_lr_free import CASES as LR_FREE_CASES

SHAPES = [(7,), (3, 5), (1,), (300,), (2, 3, 4)]


def _elementwise_probe(rule: Rule, group: dict[str, Any], steps: int = 3) -> None:
    """Assert that ``rule`` stepped on one flat run of several tensors equals stepping each alone.

    This is exactly what the flat engines rely on; a rule that reduces, reshapes or mixes
    coordinates fails it.
    """
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
             for _ in range(steps)]
    flags, h = rule.flags(group), rule.scalars(group)
    alone = [p.clone().reshape(-1) for p in params]
    alone_state = [rule.init_state(p, flags, h) for p in alone]
    flat = torch.cat([p.reshape(-1) for p in params])
    flat_state = rule.init_state(flat, flags, h)
    for t in range(steps):
        for p, g, s in zip(alone, grads[t], alone_state, strict=True):
            rule.update(p, g.reshape(-1), s, h, float(t + 1), flags)
        g = torch.cat([g.reshape(-1) for g in grads[t]])
        rule.update(flat, g, flat_state, h, float(t + 1), flags)
    torch.testing.assert_close(flat, torch.cat(alone), rtol=0, atol=0)


ELEMENTWISE_CASES = [
    (info.ours.rule, {**info.ours([torch.zeros(1, requires_grad=True)]).defaults, **setting})
    for info in INFOS
    if info.kind == ELEMENTWISE
    for setting in info.settings
] + [  # rule-based optimizers whose reference is another package (Lion)
    (info.ours.rule, {**info.ours([torch.zeros(1, requires_grad=True)]).defaults, **setting})
    for info in PACKAGE_INFOS
    if getattr(info.ours, "rule", None) is not None and info.ours.rule.kind == ELEMENTWISE
    for setting in info.settings
]


@pytest.mark.parametrize(
    "case", ELEMENTWISE_CASES, ids=[f"{r.name}-{i}" for i, (r, _) in enumerate(ELEMENTWISE_CASES)]
)
def test_elementwise_rules_are_elementwise(case):
    rule, group = case
    assert rule.kind == ELEMENTWISE
    _elementwise_probe(rule, group)


def test_every_registered_rule_is_in_the_conformance_registry_or_has_its_own_suite():
    # sparse_adam: tests/optim/test_sparse.py; muon (2-D parameters only): tests/optim/test_muon.py
    infos = INFOS + PACKAGE_INFOS + MATRIX_INFOS
    covered = {info.ours.rule.name for info in infos if hasattr(info.ours, "rule")}
    covered |= {ours.rule.name for ours, *_ in LR_FREE_CASES}  # against their packages
    library = {name for name in RULES if not name.startswith("test_")}
    assert library - covered <= {"sparse_adam"}


class _NormalizedRule(TensorRule):
    """θ ← θ − η m/‖m‖,  m ← βm + g;  counts its steps in a state entry of shape (1,)."""

    name = "test_normalized"
    hparams = (
        HParam("lr", 0.1, check=check_nonnegative, doc="η"),
        HParam("momentum", 0.5, check=check_nonnegative, doc="β"),
    )

    def init_state(self, param, flags, h):
        return {"m": torch.zeros_like(param), "count": torch.zeros(1, dtype=param.dtype)}

    def update(self, param, grad, state, h, step, flags):
        assert isinstance(step, int) and isinstance(h["lr"], float)
        assert param.shape in SEEN_SHAPES, f"handed {tuple(param.shape)}, not a whole parameter"
        state["m"].mul_(h["momentum"]).add_(grad)
        param.sub_(state["m"] / state["m"].norm() * h["lr"])
        state["count"].add_(1)


class _BatchedNormalizedRule(_NormalizedRule):
    """The same rule written for a stack ``[B, *shape]`` (norms per matrix)."""

    name = "test_normalized_batched"
    batched = True

    def update(self, param, grad, state, h, step, flags):
        assert param.shape[1:] in SEEN_SHAPES and param.dim() == len(param.shape[1:]) + 1
        BATCH_SIZES.append(param.shape[0])
        m = state["m"]
        m.mul_(h["momentum"]).add_(grad)
        norms = m.flatten(1).norm(dim=1).view(-1, *([1] * (m.dim() - 1)))
        param.sub_(m / norms * h["lr"])
        state["count"].add_(1)


SEEN_SHAPES = {torch.Size(s) for s in [(4, 3), (4, 3), (5,), (2, 2, 2)]}
BATCH_SIZES: list[int] = []
for _rule in (_NormalizedRule(), _BatchedNormalizedRule()):
    if _rule.name not in RULES:
        register_rule(_rule)


class _Normalized(RuleOptimizer):
    """A test optimizer over the tensor rule above."""

    rule = RULES["test_normalized"]

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.5, *, engine="auto"):
        super().__init__(params, locals(), engine=engine)


def _hand_computed(values, grads, lr=0.1, momentum=0.5):
    out = []
    for x, gs in zip(values, grads, strict=True):
        x, m = x.clone(), torch.zeros_like(x)
        for g in gs:
            m = momentum * m + g
            x = x - m / m.norm() * lr
        out.append(x)
    return out


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_tensor_rules_see_whole_tensors_under_every_engine(engine, batched):
    gen = torch.Generator().manual_seed(1)
    shapes = [(4, 3), (4, 3), (5,), (2, 2, 2), (4, 3)]
    values = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    grads = [[torch.randn(s, generator=gen, dtype=torch.float64) for _ in range(4)] for s in shapes]
    params = [v.clone().requires_grad_() for v in values]
    rule = "test_normalized_batched" if batched else "test_normalized"
    opt = _Normalized([{"params": params[:4], "rule": rule},
                       {"params": params[4:], "lr": 0.1}], engine=engine)
    BATCH_SIZES.clear()
    for t in range(4):
        for p, gs in zip(params, grads, strict=True):
            p.grad = gs[t].clone()
        opt.step()
    expected = _hand_computed(values, grads)
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-13, atol=1e-15)
    for p in params:
        assert opt.state[p]["count"].item() == 4 and opt.state[p]["m"].shape == p.shape
        assert opt.state[p]["step"].item() == 4
    if batched and engine != "reference":
        assert 2 in BATCH_SIZES  # the two neighbouring (4, 3) matrices went as one stack
    # the state dict is per parameter and loads into another engine
    other = _Normalized([{"params": [v.clone().requires_grad_() for v in values[:4]],
                          "rule": rule}, {"params": [values[4].clone().requires_grad_()]}],
                        engine="reference")
    other.load_state_dict(opt.state_dict())
    torch.testing.assert_close(other.state_dict()["state"][0]["m"], opt.state[params[0]]["m"])


def test_no_kernel_is_ever_made_for_a_tensor_rule():
    p = torch.zeros(4, 3, requires_grad=True)
    opt = _Normalized([p], engine="compiled")
    run = describe(opt, opt.param_groups[0])
    assert run.rule.kind == TENSOR
    with pytest.raises(TypeError, match="never compiled"):
        get_kernel(run, p, {}, {})


def test_a_tensor_rule_refuses_complex_parameters_at_construction():
    with pytest.raises(ValueError, match=r"complex parameters \(got one of shape \(2,\)"):
        _Normalized([torch.zeros(2, dtype=torch.complex64, requires_grad=True)])


def test_a_rule_that_is_not_elementwise_fails_the_probe():
    class _NormRule(Rule):  # wrongly declared elementwise: a per-tensor norm
        name = "bad"
        hparams = (HParam("lr", 0.1, doc="η"),)

        def update(self, param, grad, state, h, step, flags):
            param.sub_(grad / grad.norm() * h["lr"])

    with pytest.raises(AssertionError):
        _elementwise_probe(_NormRule(), {"lr": 0.1})


@pytest.mark.parametrize("engine", ["reference", "flat"])
def test_several_rules_in_one_optimizer_equal_torch_side_by_side(engine):
    torch.manual_seed(3)
    a = [torch.randn(4, 3, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    b = [torch.randn(5, dtype=torch.float64, requires_grad=True)]
    ours_a, ours_b = [p.detach().clone().requires_grad_() for p in a], [
        b[0].detach().clone().requires_grad_()]
    opt = descentlab.AdamW([{"params": ours_a, "lr": 0.01},
                            {"params": ours_b, "rule": "sgd", "momentum": 0.9}], engine=engine)
    assert set(opt.param_groups[1]) == {"params", "rule", "lr", "momentum", "dampening",
                                        "weight_decay", "nesterov", "momentum_form", "maximize",
                                        "state_precision"}
    assert opt.param_groups[1]["lr"] == 1e-3  # SGD's declared default, not AdamW's
    ref_adamw = torch.optim.AdamW(a, lr=0.01, foreach=False)
    ref_sgd = torch.optim.SGD(b, lr=1e-3, momentum=0.9, foreach=False)
    for t in range(20):
        for ps in (a + b, ours_a + ours_b):
            for k, p in enumerate(ps):
                p.grad = torch.cos(p.detach() * (t + k + 1))
        opt.step()
        ref_adamw.step()
        ref_sgd.step()
    for x, y in zip(ours_a + ours_b, a + b, strict=True):  # the parity suite's tolerance
        torch.testing.assert_close(x.detach(), y.detach(), rtol=1e-13, atol=1e-15)
    saved = opt.state_dict()
    assert saved["param_groups"][1]["rule"] == "sgd"
    assert set(saved["state"][2]) == {"step", "momentum_buffer"}
    fresh = descentlab.AdamW([{"params": [p.detach().clone().requires_grad_() for p in ours_a]},
                              {"params": [ours_b[0].detach().clone().requires_grad_()]}])
    fresh.load_state_dict(saved)
    assert fresh.param_groups[1]["rule"] == "sgd" and fresh.param_groups[1]["momentum"] == 0.9
    assert "betas" not in fresh.param_groups[1]
    torch.testing.assert_close(fresh.state_dict()["state"][2]["momentum_buffer"],
                               saved["state"][2]["momentum_buffer"])


def test_an_unknown_rule_name_is_refused():
    with pytest.raises(ValueError, match="unknown rule 'adamx'; valid names: sgd"):
        descentlab.Adam([{"params": [torch.zeros(2, requires_grad=True)], "rule": "adamx"}])
