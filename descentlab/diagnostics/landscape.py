"""Loss landscapes: 1-D interpolation, 2-D filter-normalised planes, projected paths.

* :func:`interpolate` — ``L((1−α)θ_a + αθ_b)`` between two checkpoints
  (Goodfellow, Vinyals & Saxe 2015).
* :func:`random_direction` — a Gaussian direction rescaled filter by filter
  to the norms of the model's own filters (Li, Xu, Taylor, Studer &
  Goldstein, "Visualizing the Loss Landscape of Neural Nets", 2018), so
  that planes of networks with different weight scales are comparable.
* :func:`loss_surface` — ``L(θ_c + x·d₁ + y·d₂)`` on a grid.
* :func:`pca_directions` / :func:`project_path` — the optimizer's path
  drawn on the plane: random directions are nearly orthogonal to a path in
  high dimension, so Li et al. use the top principal components of
  ``θ_t − θ_final`` for that plot.

Parameters are flattened with ``torch.nn.utils.parameters_to_vector`` and
written back with ``vector_to_parameters``; every function leaves the model's
parameters as it found them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from descentlab.diagnostics._progress import progress_bar
from descentlab.optim.validation import check_int

__all__ = [
    "LandscapeLine",
    "LandscapeSurface",
    "interpolate",
    "loss_surface",
    "pca_directions",
    "project_path",
    "random_direction",
    "to_vector",
]

Point = torch.Tensor | Mapping[str, torch.Tensor]


def to_vector(model: nn.Module, point: Point | None = None) -> torch.Tensor:
    """Flat parameter vector of ``model`` (``point=None``), of a state dict, or a flat tensor as is.

    A state dict is read by the model's parameter names (buffers are ignored).
    """
    if point is None:
        return parameters_to_vector(model.parameters()).detach().clone()
    if isinstance(point, torch.Tensor):
        n = sum(p.numel() for p in model.parameters())
        if point.shape != (n,):
            raise ValueError(f"a flat point must have shape ({n},), got {tuple(point.shape)}")
        return point.detach()
    if isinstance(point, Mapping):
        missing = [k for k, _ in model.named_parameters() if k not in point]
        if missing:
            raise ValueError(f"state dict lacks parameters {missing[:5]}")
        return torch.cat([point[k].detach().reshape(-1) for k, _ in model.named_parameters()])
    raise TypeError(f"point must be a flat tensor or a state dict, got {type(point).__name__}")


def _evaluate(model: nn.Module, loss_fn: Callable[[], Any], theta: torch.Tensor) -> float:
    vector_to_parameters(theta, model.parameters())
    with torch.no_grad():
        return float(loss_fn())


def random_direction(
    model: nn.Module,
    *,
    seed: int = 0,
    filter_normalize: bool = True,
    ignore_1d: bool = True,
) -> torch.Tensor:
    """A random direction in parameter space (flat), filter-normalised by default.

    For each parameter with at least two dimensions, a standard Gaussian
    ``d`` of the same shape is drawn and each filter ``d_i`` (slice along the
    first, output dimension: a row of a Linear weight, an output channel of
    a convolution) is rescaled to ``‖d_i‖ = ‖θ_i‖``. One-dimensional
    parameters (biases, normalisation scales) get zero when ``ignore_1d``
    (Li et al.'s default), else they are rescaled as a single filter.
    """
    g = torch.Generator().manual_seed(seed)
    parts = []
    for p in model.parameters():
        d = torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device)
        p = p.detach()
        if filter_normalize:
            if p.dim() <= 1:
                d = torch.zeros_like(d) if ignore_1d else d * (p.norm() / (d.norm() + 1e-12))
            else:
                dn = d.flatten(1).norm(dim=1).clamp_min(1e-12)
                pn = p.flatten(1).norm(dim=1)
                d = d * (pn / dn).view(-1, *([1] * (p.dim() - 1)))
        parts.append(d.reshape(-1))
    return torch.cat(parts)


@dataclasses.dataclass
class LandscapeLine:
    """Losses along ``θ(α) = (1−α)θ_a + αθ_b``."""

    alphas: torch.Tensor
    losses: torch.Tensor

    def plot(self, ax: Any = None) -> Any:
        """Loss against α with the two checkpoints (α = 0, 1) marked; returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(self.alphas.numpy(), self.losses.numpy())
        for a in (0.0, 1.0):
            ax.axvline(a, color="0.6", ls=":", lw=1)
        ax.set_xlabel("α  (0: start, 1: end)")
        ax.set_ylabel("loss")
        return ax


def interpolate(
    model: nn.Module,
    start: Point,
    end: Point,
    loss_fn: Callable[[], Any],
    alphas: Sequence[float] | torch.Tensor | None = None,
) -> LandscapeLine:
    """Loss on the segment between two checkpoints (state dicts or flat vectors).

    ``alphas`` defaults to 41 points from −0.5 to 1.5 (a little beyond both
    ends). ``loss_fn()`` computes the loss at the model's current
    parameters; it runs under ``no_grad``.
    """
    a = to_vector(model, start)
    b = to_vector(model, end)
    alphas = torch.linspace(-0.5, 1.5, 41) if alphas is None else torch.as_tensor(alphas)
    keep = to_vector(model)
    try:
        losses = [_evaluate(model, loss_fn, (1 - float(t)) * a + float(t) * b) for t in alphas]
    finally:
        vector_to_parameters(keep, model.parameters())
    return LandscapeLine(alphas.to(torch.float64), torch.tensor(losses, dtype=torch.float64))


@dataclasses.dataclass
class LandscapeSurface:
    """``losses[j, i] = L(center + xs[i]·d1 + ys[j]·d2)``."""

    xs: torch.Tensor
    ys: torch.Tensor
    losses: torch.Tensor
    center: torch.Tensor
    d1: torch.Tensor
    d2: torch.Tensor

    def plot(
        self, ax: Any = None, path: torch.Tensor | None = None, levels: int = 30, log: bool = True
    ) -> Any:
        """Contour plot, optionally with a path (``(T, 2)`` coordinates) drawn on it."""
        import matplotlib.pyplot as plt
        import numpy as np

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 4.5))
        z = self.losses.numpy()
        if log and np.nanmin(z) > 0:
            z = np.log10(z)
        cs = ax.contourf(self.xs.numpy(), self.ys.numpy(), z, levels=levels, cmap="viridis")
        ax.contour(self.xs.numpy(), self.ys.numpy(), z, levels=levels, colors="k", linewidths=0.3)
        ax.figure.colorbar(cs, ax=ax, label="log10 loss" if log else "loss")
        if path is not None:
            p = path.numpy()
            ax.plot(p[:, 0], p[:, 1], "w.-", ms=3, lw=1)
            ax.plot(p[-1, 0], p[-1, 1], "r*", ms=10)
        ax.set_xlabel("direction 1")
        ax.set_ylabel("direction 2")
        return ax


def loss_surface(
    model: nn.Module,
    loss_fn: Callable[[], Any],
    d1: torch.Tensor | None = None,
    d2: torch.Tensor | None = None,
    *,
    center: Point | None = None,
    span: tuple[float, float] = (-1.0, 1.0),
    resolution: int = 21,
    seed: int = 0,
    progress: bool = False,
) -> LandscapeSurface:
    """Evaluate the loss on a plane through ``center`` (default: the current parameters).

    Directions default to two filter-normalised random directions (seeds
    ``seed`` and ``seed + 1``). The grid is ``resolution × resolution``
    over ``span`` in both coordinates: ``resolution²`` loss evaluations.
    """
    check_int("resolution", resolution, minimum=2)
    if not span[1] > span[0]:
        raise ValueError(f"span must be (low, high) with high > low, got {span!r}")
    c = to_vector(model, center)
    d1 = random_direction(model, seed=seed) if d1 is None else d1
    d2 = random_direction(model, seed=seed + 1) if d2 is None else d2
    xs = torch.linspace(span[0], span[1], resolution, dtype=torch.float64)
    losses = torch.empty(resolution, resolution, dtype=torch.float64)
    keep = to_vector(model)
    try:
        with progress_bar(progress, "loss surface", resolution * resolution) as advance:
            for j, y in enumerate(xs):
                for i, x in enumerate(xs):
                    losses[j, i] = _evaluate(model, loss_fn, c + float(x) * d1 + float(y) * d2)
                    advance()
    finally:
        vector_to_parameters(keep, model.parameters())
    return LandscapeSurface(xs, xs.clone(), losses, c, d1, d2)


def pca_directions(
    trajectory: Sequence[torch.Tensor], center: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two principal directions of ``θ_t − center`` (default center: the last point).

    Returns ``(d1, d2, explained)`` with unit, orthogonal ``d1``, ``d2`` and
    the share of the path's variance each explains.
    """
    if len(trajectory) < 3:
        raise ValueError(f"trajectory needs at least 3 points, got {len(trajectory)}")
    pts = torch.stack([t.detach().to(torch.float64) for t in trajectory])
    c = pts[-1] if center is None else center.to(torch.float64)
    _, s, vh = torch.linalg.svd(pts - c, full_matrices=False)
    explained = s**2 / (s**2).sum()
    dtype = trajectory[0].dtype
    return vh[0].to(dtype), vh[1].to(dtype), explained[:2]


def project_path(
    trajectory: Sequence[torch.Tensor], center: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor
) -> torch.Tensor:
    """Coordinates ``(x_t, y_t)`` minimising ``‖θ_t − center − x d1 − y d2‖`` (least squares).

    Exact when the path lies in the plane; the directions need not be
    orthogonal. Returns a ``(T, 2)`` tensor.
    """
    A = torch.stack([d1, d2], dim=1).to(torch.float64)
    B = torch.stack([(t.detach() - center).to(torch.float64) for t in trajectory], dim=1)
    return torch.linalg.lstsq(A, B).solution.T
