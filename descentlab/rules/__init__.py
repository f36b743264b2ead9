"""Update rules: the specification of every algorithm, and the registry of rules by name.

A parameter group may name its rule (``{"params": ..., "rule": "adamw"}``),
so one optimizer runs different rules on different groups; the name is looked
up here (:func:`get_rule`). See :mod:`descentlab.rules.base` for the
interface (rule kinds, hyperparameter declarations).
"""

from __future__ import annotations

from descentlab.rules.adafactor import AdafactorRule
from descentlab.rules.adam import ADAMW, AdamaxRule, AdamRule, NAdamRule, RAdamRule, SparseAdamRule
from descentlab.rules.adam_variants import AdEMAMixRule, ADOPTRule
from descentlab.rules.adaptive import AdadeltaRule, AdagradRule, RMSpropRule
from descentlab.rules.asgd import ASGDRule
from descentlab.rules.base import ELEMENTWISE, GLOBAL, TENSOR, HParam, Rule, TensorRule
from descentlab.rules.lion import LionRule
from descentlab.rules.lr_free import DAdaptAdamRule, DAdaptSGDRule, ProdigyRule
from descentlab.rules.mars import MARSRule
from descentlab.rules.muon import MuonRule
from descentlab.rules.plain_shampoo import PlainShampooRule
from descentlab.rules.reduction import GlobalRule
from descentlab.rules.rprop import RpropRule
from descentlab.rules.schedule_free import (
    AdamWScheduleFreeRule,
    RAdamScheduleFreeRule,
    SGDScheduleFreeRule,
)
from descentlab.rules.sgd import SGDRule
from descentlab.rules.shampoo import ShampooRule
from descentlab.rules.soap import SOAPRule
from descentlab.rules.trust_ratio import LAMBRule, LARSRule

__all__ = ["RULES", "register_rule", "get_rule", "Rule", "TensorRule", "GlobalRule", "HParam",
           "ELEMENTWISE", "TENSOR", "GLOBAL"]

#: Rule name → rule (one instance each; rules are stateless).
RULES: dict[str, Rule] = {}


def register_rule(rule: Rule) -> Rule:
    """Add ``rule`` to :data:`RULES` under its name (a name is registered once); return it."""
    if not rule.name:
        raise ValueError(f"{type(rule).__name__} has no name to register it under")
    known = RULES.get(rule.name)
    if known is not None and known is not rule:
        raise ValueError(f"a rule named {rule.name!r} is already registered")
    RULES[rule.name] = rule
    return rule


def get_rule(name: str) -> Rule:
    """The registered rule called ``name``; a ValueError lists the valid names otherwise."""
    if not isinstance(name, str) or name not in RULES:
        raise ValueError(f"unknown rule {name!r}; valid names: {', '.join(RULES)}")
    return RULES[name]


for _rule in (
    SGDRule(),
    AdagradRule(),
    RMSpropRule(),
    AdadeltaRule(),
    AdamRule(),
    ADAMW,
    NAdamRule(),
    RAdamRule(),
    AdamaxRule(),
    SparseAdamRule(),
    LionRule(),
    LARSRule(),
    LAMBRule(),
    ADOPTRule(),
    AdEMAMixRule(),
    ProdigyRule(),
    DAdaptAdamRule(),
    DAdaptSGDRule(),
    SOAPRule(),
    ASGDRule(),
    RpropRule(),
    AdafactorRule(),
    MuonRule(),
    ShampooRule(),
    MARSRule(),
    PlainShampooRule(),
    SGDScheduleFreeRule(),
    AdamWScheduleFreeRule(),
    RAdamScheduleFreeRule(),
):
    register_rule(_rule)
