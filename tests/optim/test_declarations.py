"""Hyperparameters declared once: signatures, defaults, checks and old checkpoints follow."""

from __future__ import annotations

import inspect

import pytest
import torch

import descentlab
from descentlab.optim.base import SHELL_DEFAULTS, RuleOptimizer
from descentlab.optim.registry import OPTIMIZERS, describe_optimizer
from descentlab.rules import RULES
from descentlab.rules.base import SCALAR, STRUCTURAL

CLASSES = [cls for cls in OPTIMIZERS.values() if issubclass(cls, RuleOptimizer)]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_signature_defaults_equal_the_declarations(cls):
    declared = RuleOptimizer.declared_defaults(cls.rule)
    signature = cls.signature_defaults()
    for name, default in signature.items():
        assert name in declared, f"{cls.__name__}({name}=...) is not declared by {cls.rule.name}"
        assert default == declared[name], (cls.__name__, name)
    # every declared hyperparameter is an argument, or fixed by the class (AdamW's decoupling),
    # or computed from the arguments (MARS's lr_1d_factor)
    fixed = set(declared) - set(signature)
    assert fixed <= {"decoupled_weight_decay", *getattr(cls, "derived_hyperparameters", ())}, fixed


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_defaults_come_from_the_declarations(cls):
    opt = cls([torch.zeros(3, 2, requires_grad=True)])
    assert opt.defaults == RuleOptimizer.declared_defaults(cls.rule)
    carried = cls.rule.group_state(opt.defaults) if hasattr(cls.rule, "group_state") else {}
    assert set(opt.param_groups[0]) == {"params", *opt.defaults, *carried}


@pytest.mark.parametrize("rule", list(RULES.values()), ids=lambda r: r.name)
def test_declarations_are_complete(rule):
    names = [hp.name for hp in rule.hparams]
    assert len(names) == len(set(names)) and "lr" in names
    assert all(hp.kind in (SCALAR, STRUCTURAL) and hp.doc for hp in rule.hparams)
    group = {**rule.defaults(), **SHELL_DEFAULTS}
    rule.check(group)  # the defaults pass their own checks
    scalars = rule.scalars(group)
    assert all(isinstance(v, float) for v in scalars.values())


def test_declared_checks_run_for_groups_too():
    params = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0.0, 1.0\), got 1.5"):
        descentlab.Adam(params, betas=(0.9, 1.5))
    opt = descentlab.RMSprop(params)
    with pytest.raises(ValueError, match="alpha must be in"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "alpha": 2.0})


def test_missing_keys_of_an_old_checkpoint_take_the_declared_defaults():
    p = torch.zeros(2, requires_grad=True)
    opt = descentlab.AdamW([p])
    saved = opt.state_dict()
    for key in ("amsgrad", "decoupled_weight_decay", "maximize"):
        del saved["param_groups"][0][key]
    fresh = descentlab.AdamW([p], amsgrad=True)
    fresh.load_state_dict(saved)
    group = fresh.param_groups[0]
    assert group["amsgrad"] is False and group["decoupled_weight_decay"] is True
    assert group["maximize"] is False


def test_descriptions_list_the_declared_hyperparameters():
    text = describe_optimizer("sgd")
    assert text.startswith(inspect.getdoc(descentlab.SGD).splitlines()[0])
    assert "momentum=0.0" in text and "nesterov=False" in text
