"""Bad input gets a clear error that names the argument and the value."""

from __future__ import annotations

import math

import pytest
import torch

import descentlab
from tests.optim.infos import INFOS, MATRIX_INFOS, SPARSE_INFOS
from tests.optim.package_infos import PACKAGE_INFOS
from tests.optim.test_lr_free import REGISTERED as LR_FREE

IDS = [info.name for info in INFOS]


def p():
    return torch.zeros(3, requires_grad=True)


@pytest.mark.parametrize("info", INFOS, ids=IDS)
@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"lr": -0.1}, r"lr must be .*>= 0, got -0\.1"),
        ({"lr": float("nan")}, r"lr must be .*got nan"),
        ({"lr": torch.tensor([0.1, 0.2])}, r"lr as a tensor must have exactly one element"),
        ({"weight_decay": -1.0}, r"weight_decay must be .*got -1\.0"),
    ],
)
def test_common_arguments(info, kwargs, pattern):
    if not set(kwargs) <= set(info.ours.rule.defaults()):
        pytest.skip(f"{info.name} has no {', '.join(kwargs)}")
    with pytest.raises(ValueError, match=pattern):
        info.ours([p()], **kwargs)


@pytest.mark.parametrize(
    "cls, kwargs, pattern",
    [
        (descentlab.SGD, {"momentum": -0.5}, r"momentum must be .*got -0\.5"),
        (descentlab.SGD, {"dampening": -0.1}, r"dampening must be .*got -0\.1"),
        (descentlab.SGD, {"nesterov": True}, r"nesterov=True requires momentum > 0"),
        (
            descentlab.SGD,
            {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
            r"nesterov=True requires .*dampening=0\.1",
        ),
        (descentlab.SGD, {"momentum_form": "polyak"}, r"momentum_form must be one of"),
        (
            descentlab.SGD,
            {"momentum": 0.9, "dampening": 0.5, "momentum_form": "averaged"},
            r"dampening must be 0 with momentum_form='averaged'",
        ),
        (descentlab.Adam, {"eps": -1e-8}, r"eps must be .*got -1e-08"),
        (
            descentlab.Adam,
            {"betas": (1.0, 0.999)},
            r"betas\[0\] must be in \[0\.0, 1\.0\), got 1\.0",
        ),
        (descentlab.AdamW, {"betas": (0.9, -0.1)}, r"betas\[1\] must be in .*got -0\.1"),
        (descentlab.NAdam, {"betas": (0.9,)}, r"betas must be a tuple of 2 numbers"),
        (descentlab.NAdam, {"momentum_decay": -1.0}, r"momentum_decay must be"),
        (descentlab.RAdam, {"betas": (0.9, 1.5)}, r"betas\[1\]"),
        (descentlab.Adamax, {"eps": -1.0}, r"eps must be"),
        (descentlab.RMSprop, {"alpha": 1.5}, r"alpha must be in \[0\.0, 1\.0\], got 1\.5"),
        (descentlab.RMSprop, {"momentum": -0.1}, r"momentum must be"),
        (descentlab.Adadelta, {"rho": -0.1}, r"rho must be in \[0\.0, 1\.0\], got -0\.1"),
        (descentlab.Adagrad, {"lr_decay": -1.0}, r"lr_decay must be"),
        (descentlab.Adagrad, {"initial_accumulator_value": -1.0}, r"initial_accumulator_value"),
    ],
)
def test_algorithm_arguments(cls, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls([p()], **kwargs)


def test_wrong_types_name_the_argument():
    with pytest.raises(TypeError, match=r"lr must be a real number, got '0\.1' \(str\)"):
        descentlab.Adam([p()], lr="0.1")


@pytest.mark.parametrize(
    "params, exc, pattern",
    [
        ([], ValueError, r"params is an empty list"),
        (torch.zeros(2), TypeError, r"got a single tensor"),
        ([torch.zeros(2), "w"], TypeError, r"params\[1\] must be a torch\.Tensor, got str"),
        ([{"params": []}], ValueError, r"parameter group 0 has an empty 'params' list"),
    ],
)
def test_bad_params(params, exc, pattern):
    with pytest.raises(exc, match=pattern):
        descentlab.SGD(params, lr=0.1)


def test_non_leaf_and_duplicate_parameters():
    leaf = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=r"params\[0\] is not a leaf tensor"):
        descentlab.Adam([leaf * 2])
    with pytest.warns(UserWarning, match=r"duplicate parameters"):  # as torch.optim
        descentlab.Adam([leaf, leaf])
    with pytest.raises(ValueError, match=r"param group 1, params\[0\] is the same tensor as"):
        descentlab.Adam([{"params": [leaf]}, {"params": [leaf]}])
    opt = descentlab.Adam([leaf])
    with pytest.raises(ValueError, match=r"already in another parameter group"):
        opt.add_param_group({"params": [leaf]})
    with pytest.raises(ValueError, match=r"lr must be"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "lr": -1})


def test_unknown_names_in_the_factory():
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'; valid names: sgd, adagrad"):
        descentlab.make_optimizer("adamm", [p()])
    with pytest.raises(TypeError, match=r"adam: .*momentum"):
        descentlab.make_optimizer("adam", [p()], momentum=0.9)
    with pytest.raises(ValueError, match=r"engine must be one of"):
        descentlab.Adam([p()], engine="turbo")


def test_factory_builds_every_registered_optimizer():
    names = descentlab.available_optimizers()
    infos = INFOS + SPARSE_INFOS + PACKAGE_INFOS + MATRIX_INFOS
    everything = {i.name: i.ours for i in infos} | LR_FREE
    assert set(everything) == set(names)
    matrices = {i.name for i in MATRIX_INFOS}
    for name in names:
        params = [torch.zeros(3, 2, requires_grad=True)] if name in matrices else [p()]
        opt = descentlab.make_optimizer(name.upper(), params, lr=0.05)
        assert type(opt) is everything[name]
        assert opt.param_groups[0]["lr"] == 0.05


def test_one_element_tensor_lr_is_accepted():
    x = torch.ones(2, dtype=torch.float64, requires_grad=True)
    opt = descentlab.SGD([x], lr=torch.tensor(0.5))
    x.sum().backward()
    opt.step()
    assert x.tolist() == [0.5, 0.5]


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_non_finite_gradient_propagates_as_in_torch(info):
    """Documented behaviour: a step with a NaN/inf gradient does what torch.optim does."""
    results = []
    for cls in (info.ours, info.torch_cls):
        x = torch.ones(3, dtype=torch.float64, requires_grad=True)
        opt = cls([x], **info.settings[0])
        x.grad = torch.tensor([float("nan"), float("inf"), 1.0], dtype=torch.float64)
        opt.step()
        results.append(x.detach().tolist())
    ours, ref = results
    for a, b in zip(ours, ref, strict=True):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-8)
    if info.name != "rprop":  # Rprop steps by sign(g), and torch.sign(nan) is 0
        assert math.isnan(ours[0])


@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_torch_implementation_switches_are_accepted_for_drop_in_use(info):
    x = torch.ones(2, requires_grad=True)
    info.ours([x], foreach=True, fused=None, capturable=False, differentiable=False)
    with pytest.raises(ValueError, match=r"differentiable=True is not supported"):
        info.ours([x], differentiable=True)
    with pytest.raises(ValueError, match=r"capturable=True is not supported"):
        info.ours([x], capturable=True)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'turbo'"):
        info.ours([x], turbo=True)
