"""Small built-in problems for ``descentlab diagnose`` and the demonstration tests.

The digits data (8×8 images, 10 classes, 1,797 examples) ship inside
scikit-learn, so nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch
from torch import nn

from descentlab.optim.validation import check_int, check_interval

__all__ = ["DigitsData", "batches", "deep_mlp", "load_digits_data"]


@dataclasses.dataclass
class DigitsData:
    """Standardised digits features (float32) and labels, split into train and validation."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def load_digits_data(seed: int = 0, val_fraction: float = 0.2) -> DigitsData:
    """scikit-learn's digits, shuffled with ``seed``, features standardised on the train split."""
    from sklearn.datasets import load_digits

    check_interval("val_fraction", val_fraction, 0.0, 1.0, high_closed=False)
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_val = int(round(val_fraction * len(x)))
    xt, yt, xv, yv = x[n_val:], y[n_val:], x[:n_val], y[:n_val]
    mean, std = xt.mean(0), xt.std(0) + 1e-3
    return DigitsData((xt - mean) / std, yt, (xv - mean) / std, yv)


def deep_mlp(
    depth: int,
    width: int = 64,
    in_features: int = 64,
    out_features: int = 10,
    activation: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """An MLP with ``depth`` Linear layers (``depth − 1`` hidden layers of ``width`` units)."""
    check_int("depth", depth, minimum=1)
    check_int("width", width, minimum=1)
    layers: list[nn.Module] = []
    d = in_features
    for _ in range(depth - 1):
        layers += [nn.Linear(d, width), activation()]
        d = width
    layers.append(nn.Linear(d, out_features))
    return nn.Sequential(*layers)


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled mini-batches (a new permutation each epoch)."""
    check_int("batch_size", batch_size, minimum=1)
    if batch_size > len(x):
        raise ValueError(f"batch_size must be <= the number of examples {len(x)}, got {batch_size}")
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - batch_size + 1, batch_size):
            idx = perm[i : i + batch_size]
            yield x[idx], y[idx]
