"""Parameter groups that exempt biases and normalisation weights from weight decay.

Weight decay pulls weights towards zero to limit a layer's scale. For the
gain and shift of a normalisation layer (batch, layer, group, instance,
RMS norm) and for biases this is usually harmful: their scale is not what
over-fits, and decaying a norm layer's gain fights the normalisation. Most
recipes (BERT, GPT-2/minGPT, timm, the AlgoPerf baselines) exempt them.

:func:`weight_decay_param_groups` decides by **module type** (a parameter
owned by an instance of a normalisation class) and by the parameter's
attribute name on its owning module for biases (``bias``, ``bias_*``,
``*_bias``: ``Linear.bias``, ``LSTM.bias_ih_l0``,
``MultiheadAttention.in_proj_bias``), never by substring matches on the
full dotted name (``"norm" in name`` misses ``bn1`` and catches
``normal_proj``). Parameters registered through
``torch.nn.utils.parametrize`` count as owned by the parametrised module.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from descentlab.optim.validation import check_nonnegative

__all__ = ["NORM_LAYERS", "weight_decay_mask", "weight_decay_param_groups"]

NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
"""Module types whose parameters are not decayed by default (lazy variants are subclasses)."""


def _is_bias_name(name: str) -> bool:
    return name == "bias" or name.startswith("bias_") or name.endswith("_bias")


def _owner_and_attr(model: nn.Module, full_name: str) -> tuple[nn.Module, str]:
    """The module a parameter belongs to, seeing through ``parametrizations`` containers."""
    parts = full_name.split(".")
    if "parametrizations" in parts:
        i = parts.index("parametrizations")
        owner = model.get_submodule(".".join(parts[:i]))
        return owner, parts[i + 1]  # the parametrised tensor's name, e.g. "weight"
    owner = model.get_submodule(".".join(parts[:-1]))
    return owner, parts[-1]


def weight_decay_mask(
    model: nn.Module,
    *,
    exclude_bias: bool = True,
    exclude_norm: bool = True,
    exclude_embeddings: bool = False,
    norm_types: tuple[type[nn.Module], ...] = NORM_LAYERS,
) -> dict[str, bool]:
    """Map each trainable parameter's name to whether it should be decayed.

    ``norm_types`` adds your own normalisation classes (e.g.
    ``NORM_LAYERS + (MyScaleNorm,)``). ``exclude_embeddings=True`` also
    exempts ``nn.Embedding``/``nn.EmbeddingBag`` weights (minGPT does;
    BERT does not). Shared (tied) parameters appear once, under their first
    name, and are decayed only if no owner exempts them.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    decay: dict[int, bool] = {}
    names: dict[int, str] = {}
    for full_name, p in model.named_parameters(remove_duplicate=False):
        if not p.requires_grad:
            continue
        owner, attr = _owner_and_attr(model, full_name)
        exempt = (
            (exclude_norm and isinstance(owner, norm_types))
            or (exclude_bias and _is_bias_name(attr))
            or (exclude_embeddings and isinstance(owner, (nn.Embedding, nn.EmbeddingBag)))
        )
        names.setdefault(id(p), full_name)
        decay[id(p)] = decay.get(id(p), True) and not exempt
    return {names[k]: v for k, v in decay.items()}


def weight_decay_param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    exclude_bias: bool = True,
    exclude_norm: bool = True,
    exclude_embeddings: bool = False,
    norm_types: tuple[type[nn.Module], ...] = NORM_LAYERS,
    **group_options: Any,
) -> list[dict[str, Any]]:
    """Two param groups: decayed weights with ``weight_decay``, the rest with ``0.0``.

    Pass the result straight to an optimizer::

        groups = weight_decay_param_groups(model, 0.05)
        opt = descentlab.AdamW(groups, lr=1e-3)

    ``group_options`` (e.g. ``lr=...``) are copied into both groups. Empty
    groups are left out; parameters with ``requires_grad=False`` are left
    out too. :func:`weight_decay_mask` shows which parameter went where.
    """
    weight_decay = check_nonnegative("weight_decay", weight_decay)
    mask = weight_decay_mask(
        model,
        exclude_bias=exclude_bias,
        exclude_norm=exclude_norm,
        exclude_embeddings=exclude_embeddings,
        norm_types=norm_types,
    )
    params = dict(model.named_parameters())
    decayed = [params[n] for n, d in mask.items() if d]
    exempt = [params[n] for n, d in mask.items() if not d]
    groups = []
    if decayed:
        groups.append({"params": decayed, "weight_decay": weight_decay, **group_options})
    if exempt:
        groups.append({"params": exempt, "weight_decay": 0.0, **group_options})
    if not groups:
        raise ValueError("model has no trainable parameters")
    return groups

