"""The usual Muon recipe as parameter groups, chosen by the model's structure.

Muon is for the matrices of hidden layers; everything else is trained by
AdamW (Jordan et al. 2024; Liu et al. 2025). :func:`muon_param_groups`
decides from what each parameter *is* — the module that owns it, its
attribute name there, its number of dimensions, its position — never from
substrings of its dotted name:

==========================================  =====  ======================================
parameter                                   rule   why
==========================================  =====  ======================================
weight of an ``nn.Embedding``/``EmbeddingBag``  adamw  embedding (a lookup table, not a map)
weight of the output head                   adamw  the last ``nn.Linear`` of the model (in
                                                   module order), or one given as ``head=``;
                                                   a head tied to an embedding is that
                                                   embedding's weight
parameters of normalisation layers          adamw  gains and shifts (``NORM_LAYERS``)
biases (``bias``, ``bias_*``, ``*_bias``)   adamw  not a matrix
anything not 2-D (conv kernels, scalars)    adamw  Muon orthogonalises matrices only
other 2-D parameters not of a linear layer  adamw  a matrix that is not a layer's map
                                                   (positional tables, raw parameters)
2-D weight of any other ``nn.Linear``       muon   hidden linear layer
``in_proj_weight`` of ``nn.MultiheadAttention`` muon  the attention's q, k, v projection
==========================================  =====  ======================================

A parameter shared by several modules (weight tying) appears once and goes
to AdamW if any owner sends it there. The AdamW group takes
``torch.optim.AdamW``'s defaults unless given; the Muon group the
optimizer's (``descentlab.Muon(groups, lr=...)``) unless given.
:meth:`MuonParamGroups.table` prints the choice.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from descentlab.param_groups import NORM_LAYERS

__all__ = ["muon_param_groups", "MuonParamGroups"]

EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)


class MuonParamGroups(list):
    """The parameter groups (a list to pass to an optimizer) and the reason for each choice.

    Attributes:
        choices: one row per parameter: (name, shape, module type, rule, why).
    """

    def __init__(self, groups: list[dict[str, Any]], choices: list[tuple[str, ...]]) -> None:
        super().__init__(groups)
        self.choices = choices

    def table(self) -> str:
        """The choice as an aligned text table: parameter, shape, module type, rule, why."""
        rows = [("parameter", "shape", "module", "rule", "why"), *self.choices]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        )


def _is_bias(attr: str) -> bool:
    return attr == "bias" or attr.startswith("bias_") or attr.endswith("_bias")


def _why(module: nn.Module, attr: str, p: Any, head: nn.Module | None) -> tuple[str, str]:
    """(rule, reason) for parameter ``attr`` of ``module``."""
    if isinstance(module, EMBEDDINGS):
        return "adamw", "embedding"
    if module is head:
        return "adamw", "output head"
    if isinstance(module, NORM_LAYERS):
        return "adamw", "normalisation layer"
    if _is_bias(attr):
        return "adamw", "bias"
    if p.dim() != 2:
        return "adamw", f"{p.dim()}-D (Muon takes matrices only)"
    if isinstance(module, nn.Linear) and attr == "weight":
        return "muon", "hidden linear layer"
    if isinstance(module, nn.MultiheadAttention) and attr == "in_proj_weight":
        return "muon", "attention projection"
    return "adamw", "2-D but not a linear layer's weight"


def muon_param_groups(
    model: nn.Module,
    *,
    lr: float | None = None,
    weight_decay: float | None = None,
    momentum: float | None = None,
    adamw_lr: float | None = None,
    adamw_betas: tuple[float, float] | None = None,
    adamw_eps: float | None = None,
    adamw_weight_decay: float | None = None,
    head: nn.Module | str | None = None,
) -> MuonParamGroups:
    """Groups for :class:`descentlab.Muon`: hidden matrices → Muon, the rest → AdamW.

    See the module docstring for the rules. Arguments left ``None`` are not
    set in the group (the Muon group then takes the optimizer's values, the
    AdamW group ``torch.optim.AdamW``'s defaults). ``head`` names the output
    layer (a module or its dotted name) when it is not the model's last
    ``nn.Linear``. Parameters with ``requires_grad=False`` are left out.

    Example::

        groups = descentlab.muon_param_groups(model, lr=0.02, adamw_lr=3e-4)
        print(groups.table())
        opt = descentlab.Muon(groups)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(head, str):
        try:
            head = model.get_submodule(head)
        except AttributeError:
            raise ValueError(f"head={head!r} is not a sub-module of the model") from None
    elif head is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    elif not any(m is head for m in model.modules()):
        raise ValueError(f"head ({type(head).__name__}) is not a sub-module of the model")
    owners: dict[int, list[tuple[str, nn.Module, str]]] = {}
    tensors: dict[int, Any] = {}
    for module_name, module in model.named_modules():
        for attr, p in module.named_parameters(recurse=False):
            if p.requires_grad:
                name = f"{module_name}.{attr}" if module_name else attr
                owners.setdefault(id(p), []).append((name, module, attr))
                tensors[id(p)] = p
    muon, adamw, choices = [], [], []
    for key, found in owners.items():
        p = tensors[key]
        verdicts = [_why(module, attr, p, head) for _, module, attr in found]
        rule, why = next((v for v in verdicts if v[0] == "adamw"), verdicts[0])
        name, module, _ = found[0]
        if len(found) > 1:
            why += f" (shared by {len(found)} modules)"
        (muon if rule == "muon" else adamw).append(p)
        choices.append((name, str(tuple(p.shape)), type(module).__name__, rule, why))
    muon_options = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum}
    adamw_options = {"lr": adamw_lr, "betas": adamw_betas, "eps": adamw_eps,
                     "weight_decay": adamw_weight_decay}
    groups = []
    if muon:
        groups.append({"params": muon, "rule": "muon",
                       **{k: v for k, v in muon_options.items() if v is not None}})
    if adamw:
        groups.append({"params": adamw, "rule": "adamw",
                       **{k: v for k, v in adamw_options.items() if v is not None}})
    if not groups:
        raise ValueError("model has no trainable parameters")
    return MuonParamGroups(groups, choices)
