"""Switchable Normalization (Luo, Ren, Peng, Zhang & Li, ICLR 2019).

Each SN layer learns how much of instance, layer and batch statistics to
use. For an input ``x`` of shape ``(N, C, *)``:

* instance:  ``μ_in[n,c]``, ``σ²_in[n,c]`` over the spatial positions;
* layer:     ``μ_ln[n] = mean_c μ_in``, ``σ²_ln[n] = mean_c(σ²_in + μ_in²) − μ_ln²``;
* batch:     ``μ_bn[c] = mean_n μ_in``, ``σ²_bn[c] = mean_n(σ²_in + μ_in²) − μ_bn²``;

then ``μ = Σ_k w_k μ_k``, ``σ² = Σ_k w'_k σ²_k`` with ``w = softmax(λ)``,
``w' = softmax(λ')`` (separate learned logits for means and variances,
initialised equal) and ``y = γ (x − μ)/√(σ² + ε) + β``.

In evaluation mode the batch statistics are replaced by running averages
kept as ``torch.nn.BatchNorm`` keeps them (``momentum``, unbiased running
variance); instance and layer statistics always come from the sample. The
paper uses batch *averages* at inference; the running average is what the
reference implementation and BatchNorm do.

Inputs without spatial positions, ``(N, C)``, have no instance statistics;
:class:`SwitchableNorm1d` then switches between layer and batch only.

The other normalisations of seed 000 are torch's: ``torch.nn.BatchNorm1d/2d/3d``,
``torch.nn.GroupNorm``, ``torch.nn.InstanceNorm1d/2d/3d``, ``torch.nn.LayerNorm``,
and the parametrizations ``torch.nn.utils.parametrizations.weight_norm`` and
``torch.nn.utils.parametrizations.spectral_norm``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from descentlab.optim.validation import check_int, check_interval, check_positive

__all__ = ["SwitchableNorm", "SwitchableNorm1d", "SwitchableNorm2d", "SwitchableNorm3d"]

_MODES = ("instance", "layer", "batch")


class SwitchableNorm(nn.Module):
    """Switchable Normalization over ``(N, C, *)`` inputs (see the module docstring).

    Args:
        num_features: channels ``C``.
        modes: which statistics to switch between, a subset of
            ``("instance", "layer", "batch")`` (default all three).
        eps: added to the variance (default 1e-5, as BatchNorm).
        momentum: running-average factor of the batch statistics (default 0.1).
        affine: learn the per-channel ``γ`` (init 1) and ``β`` (init 0).
        track_running_stats: keep running batch statistics for evaluation;
            if ``False``, batch statistics of the current batch are used in
            both modes.

    Attributes ``mean_logits`` and ``var_logits`` are the learned ``λ``,
    ``λ'``; :meth:`importance` returns their softmaxes.
    """

    def __init__(
        self,
        num_features: int,
        modes: tuple[str, ...] = _MODES,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.num_features = check_int("num_features", num_features, minimum=1)
        modes = tuple(modes)
        if not modes or any(m not in _MODES for m in modes) or len(set(modes)) != len(modes):
            raise ValueError(f"modes must be distinct names from {_MODES}, got {modes!r}")
        self.modes = modes
        self.eps = check_positive("eps", eps)
        self.momentum = check_interval("momentum", momentum, 0.0, 1.0)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.mean_logits = nn.Parameter(torch.zeros(len(modes)))
        self.var_logits = nn.Parameter(torch.zeros(len(modes)))
        if self.affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats and "batch" in modes:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"expected input of shape (N, {self.num_features}, *), got {tuple(x.shape)}"
            )
        if "instance" in self.modes and x.dim() < 3:
            raise ValueError(
                "instance statistics need spatial positions: input (N, C) has none; "
                "use modes=('layer', 'batch') (SwitchableNorm1d does for 2-D inputs)"
            )

    def importance(self) -> dict[str, tuple[float, float]]:
        """``{mode: (weight of its mean, weight of its variance)}`` after the softmaxes."""
        wm = torch.softmax(self.mean_logits.detach(), 0)
        wv = torch.softmax(self.var_logits.detach(), 0)
        return {m: (float(wm[i]), float(wv[i])) for i, m in enumerate(self.modes)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` of shape ``(N, C, *)``."""
        self._check_input_dim(x)
        n, c = x.shape[0], x.shape[1]
        flat = x.reshape(n, c, -1)
        m = flat.shape[-1]
        mean_in = flat.mean(-1, keepdim=True)  # (N, C, 1)
        sq_in = (flat * flat).mean(-1, keepdim=True)
        means, vars_ = [], []
        for mode in self.modes:
            if mode == "instance":
                means.append(mean_in)
                vars_.append(sq_in - mean_in**2)
            elif mode == "layer":
                mu = mean_in.mean(1, keepdim=True)
                means.append(mu)
                vars_.append(sq_in.mean(1, keepdim=True) - mu**2)
            else:
                if self.training or self.running_mean is None:
                    mu = mean_in.mean(0, keepdim=True)
                    var = sq_in.mean(0, keepdim=True) - mu**2
                    if self.training and self.running_mean is not None:
                        self._update_running(mu.detach().view(c), var.detach().view(c), n * m)
                else:
                    mu = self.running_mean.view(1, c, 1)
                    var = self.running_var.view(1, c, 1)
                means.append(mu)
                vars_.append(var)
        wm = torch.softmax(self.mean_logits, 0)
        wv = torch.softmax(self.var_logits, 0)
        mean = sum(w * t for w, t in zip(wm, means, strict=True))
        var = sum(w * t for w, t in zip(wv, vars_, strict=True))
        y = (flat - mean) / torch.sqrt(var + self.eps)
        if self.affine:
            y = y * self.weight.view(1, c, 1) + self.bias.view(1, c, 1)
        return y.view_as(x)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        unbiased = var * (count / max(count - 1, 1))
        self.running_mean.lerp_(mean, self.momentum)
        self.running_var.lerp_(unbiased, self.momentum)
        self.num_batches_tracked += 1

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, modes={self.modes}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


class SwitchableNorm1d(SwitchableNorm):
    """Switchable Normalization for ``(N, C)`` or ``(N, C, L)`` inputs.

    Default modes are ``("layer", "batch")`` so that ``(N, C)`` inputs work;
    pass all three for sequences ``(N, C, L)``.
    """

    def __init__(
        self, num_features: int, modes: tuple[str, ...] = ("layer", "batch"), **kw: Any
    ) -> None:
        super().__init__(num_features, modes, **kw)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2-D or 3-D input (N, C[, L]), got {x.dim()}-D")
        super()._check_input_dim(x)


class SwitchableNorm2d(SwitchableNorm):
    """Switchable Normalization for images ``(N, C, H, W)`` (instance, layer and batch)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected 4-D input (N, C, H, W), got {x.dim()}-D")
        super()._check_input_dim(x)


class SwitchableNorm3d(SwitchableNorm):
    """Switchable Normalization for volumes ``(N, C, D, H, W)``."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() != 5:
            raise ValueError(f"expected 5-D input (N, C, D, H, W), got {x.dim()}-D")
        super()._check_input_dim(x)
