"""Initialisation schemes (seed 000): thin wrappers over ``torch.nn.init`` plus LSUV.

torch already implements the formulas; this module names them the way the
literature does, fills in the two that torch spells differently (LeCun) and
adds the one torch lacks (LSUV, which needs data). :func:`init_model`
applies a scheme to every layer of a model.

================  =========================================================  ===================
scheme            weight distribution (fan_in = inputs per unit)             torch function
================  =========================================================  ===================
``zeros``         all zero (breaks symmetry only through biases: avoid)      ``zeros_``
``normal``        N(0, std²), std=0.01: the naive "small random" choice      ``normal_``
``sparse``        ``sparsity`` of each column zero, rest N(0, 0.01²)         ``sparse_``
``lecun_normal``  N(0, 1/fan_in)                 (LeCun et al. 1998)         ``kaiming_normal_``
``lecun_uniform`` U(±√(3/fan_in))                                            ``kaiming_uniform_``
``xavier_*``      Var = 2/(fan_in + fan_out)     (Glorot & Bengio 2010)      ``xavier_*_``
``kaiming_*``     Var = gain²/fan_in, gain √2 for ReLU    (He et al. 2015)   ``kaiming_*_``
``orthogonal``    a (semi-)orthogonal matrix × gain     (Saxe et al. 2014)   ``orthogonal_``
``lsuv``          orthogonal, then each layer rescaled on a batch until its
                  output variance is 1        (Mishkin & Matas 2016)         (here)
================  =========================================================  ===================

Where libraries disagree: Keras' ``lecun_normal`` draws from a *truncated*
normal with std ``√(1/fan_in)/0.8796`` (so that the truncated std is
right); here it is the plain normal, as ``torch.nn.init.kaiming_normal_``
with ``nonlinearity="linear"`` gives. torch's ``kaiming_uniform_`` default
(``a=0``, ``leaky_relu``) is the ReLU gain √2, but ``nn.Linear``'s own
default init uses ``a=√5``, i.e. U(±1/√fan_in) — neither LeCun nor Kaiming.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from descentlab.optim.validation import check_int, check_interval, check_positive

__all__ = [
    "SCHEMES",
    "init_model",
    "lecun_normal_",
    "lecun_uniform_",
    "lsuv_",
    "naive_normal_",
]


def lecun_normal_(tensor: torch.Tensor) -> torch.Tensor:
    """LeCun normal: ``N(0, 1/fan_in)`` (torch's Kaiming normal with the linear gain 1)."""
    return nn.init.kaiming_normal_(tensor, mode="fan_in", nonlinearity="linear")


def lecun_uniform_(tensor: torch.Tensor) -> torch.Tensor:
    """LeCun uniform: ``U(−√(3/fan_in), √(3/fan_in))`` (variance 1/fan_in)."""
    return nn.init.kaiming_uniform_(tensor, mode="fan_in", nonlinearity="linear")


def naive_normal_(tensor: torch.Tensor, std: float = 0.01) -> torch.Tensor:
    """The naive "small random numbers" init: ``N(0, std²)`` regardless of layer width."""
    return nn.init.normal_(tensor, 0.0, check_positive("std", std))


def _sparse(tensor: torch.Tensor, sparsity: float = 0.9, std: float = 0.01) -> torch.Tensor:
    check_interval("sparsity", sparsity, 0.0, 1.0)
    if tensor.dim() != 2:
        # torch.nn.init.sparse_ handles matrices; view conv kernels as (out, in*k*k).
        flat = tensor.detach().view(tensor.shape[0], -1)
        with torch.no_grad():
            nn.init.sparse_(flat, sparsity, std)
        return tensor
    return nn.init.sparse_(tensor, sparsity, std)


def _with_gain(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def init(tensor: torch.Tensor, nonlinearity: str = "relu", **kw: Any) -> torch.Tensor:
        return fn(tensor, gain=nn.init.calculate_gain(nonlinearity), **kw)

    return init


def _kaiming(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def init(tensor: torch.Tensor, nonlinearity: str = "relu", **kw: Any) -> torch.Tensor:
        return fn(tensor, nonlinearity=nonlinearity, **kw)

    return init


def _plain(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def init(tensor: torch.Tensor, nonlinearity: str = "relu", **kw: Any) -> torch.Tensor:
        return fn(tensor, **kw)

    return init


#: Weight schemes by name: ``fn(weight, nonlinearity="relu", **options)``.
SCHEMES: dict[str, Callable[..., torch.Tensor]] = {
    "zeros": _plain(nn.init.zeros_),
    "normal": _plain(naive_normal_),
    "sparse": _plain(_sparse),
    "lecun_normal": _plain(lecun_normal_),
    "lecun_uniform": _plain(lecun_uniform_),
    "xavier_normal": _with_gain(nn.init.xavier_normal_),
    "xavier_uniform": _with_gain(nn.init.xavier_uniform_),
    "kaiming_normal": _kaiming(nn.init.kaiming_normal_),
    "kaiming_uniform": _kaiming(nn.init.kaiming_uniform_),
    "orthogonal": _with_gain(nn.init.orthogonal_),
}


def _weighted(model: nn.Module) -> list[nn.Module]:
    return [
        m
        for m in model.modules()
        if isinstance(getattr(m, "weight", None), torch.Tensor)
        and m.weight.dim() >= 2
        and not isinstance(m, nn.Embedding)
    ]


@torch.no_grad()
def lsuv_(
    model: nn.Module,
    data: torch.Tensor,
    *,
    tol: float = 0.01,
    max_iter: int = 10,
    target_var: float = 1.0,
) -> nn.Module:
    """Layer-sequential unit-variance initialisation (Mishkin & Matas, ICLR 2016).

    1. Every weight matrix/kernel gets an orthogonal init (``orthogonal_``)
       and every bias zero.
    2. Layer by layer, in forward order, the batch ``data`` is run through
       the model, the variance of the layer's output is measured and the
       weight divided by ``√var`` until ``|var − target_var| < tol`` or
       ``max_iter`` rounds.

    LSUV needs data (the batch should be representative; the paper uses one
    mini-batch) and is not in ``torch.nn.init``. Returns ``model``.
    """
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"data must be a batch tensor for LSUV, got {type(data).__name__}")
    check_positive("tol", tol)
    check_positive("target_var", target_var)
    check_int("max_iter", max_iter, minimum=1)
    layers = _weighted(model)
    if not layers:
        raise ValueError("model has no layer with a weight matrix/kernel to initialise")
    for m in layers:
        nn.init.orthogonal_(m.weight)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    was_training = model.training
    model.eval()
    seen: dict[str, torch.Tensor] = {}
    try:
        for layer in layers:
            handle = layer.register_forward_hook(lambda _m, _a, out: seen.__setitem__("out", out))
            try:
                for _ in range(max_iter):
                    model(data)
                    var = float(seen["out"].var())
                    if not math.isfinite(var) or var <= 0.0 or abs(var - target_var) < tol:
                        break
                    layer.weight.mul_(math.sqrt(target_var / var))
            finally:
                handle.remove()
    finally:
        model.train(was_training)
    return model


def init_model(
    model: nn.Module,
    scheme: str | Callable[[torch.Tensor], Any],
    *,
    nonlinearity: str = "relu",
    bias: float = 0.0,
    data: torch.Tensor | None = None,
    **options: Any,
) -> nn.Module:
    """Initialise every layer with a weight matrix or kernel (Linear, Conv*, ...).

    Args:
        model: the model; changed in place and returned.
        scheme: a name from :data:`SCHEMES`, ``"lsuv"`` (needs ``data``),
            ``"default"`` (each layer's own ``reset_parameters``), or any
            callable ``fn(weight)``.
        nonlinearity: activation after the layers, for the gain of the
            Xavier, Kaiming and orthogonal schemes (``torch.nn.init.calculate_gain``).
        bias: value for every bias (default 0).
        data: a batch of inputs, required by ``"lsuv"``.
        **options: passed to the scheme (e.g. ``std`` for ``"normal"``,
            ``sparsity`` for ``"sparse"``, ``mode`` for Kaiming).

    Embeddings and normalisation layers (1-D weights) are left alone.
    """
    if scheme == "lsuv":
        if data is None:
            raise ValueError("scheme 'lsuv' needs a batch of inputs: pass data=...")
        return lsuv_(model, data, **options)
    if scheme == "default":
        for m in model.modules():
            if m is not model and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        return model
    if callable(scheme):

        def fn(w: torch.Tensor, nonlinearity: str = "relu", **kw: Any) -> Any:
            return scheme(w, **kw)

    elif isinstance(scheme, str) and scheme in SCHEMES:
        fn = SCHEMES[scheme]
    else:
        names = ", ".join([*SCHEMES, "lsuv", "default"])
        raise ValueError(f"scheme must be one of {names} or a callable, got {scheme!r}")
    layers = _weighted(model)
    if not layers:
        raise ValueError("model has no layer with a weight matrix/kernel to initialise")
    with torch.no_grad():
        for m in layers:
            fn(m.weight, nonlinearity=nonlinearity, **options)
            if getattr(m, "bias", None) is not None:
                nn.init.constant_(m.bias, float(bias))
    return model
