"""A user's own task for ``descentlab advise --task tests/advise/user_task.py:build``.

Generated data (no download): two Gaussian blobs in 10 dimensions, a small MLP.
"""

import torch
from torch import nn


def data(rows: int = 256, seed: int = 0, dim: int = 10):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (rows,), generator=g)
    x = torch.randn(rows, dim, generator=g) + 1.5 * (2 * y[:, None].float() - 1)
    return x, y


def noisy_data(rows: int = 256, seed: int = 0, flip: float = 0.25):
    """:func:`data` with a share ``flip`` of the labels flipped (not separable)."""
    x, y = data(rows, seed)
    g = torch.Generator().manual_seed(seed + 7)
    return x, torch.where(torch.rand(rows, generator=g) < flip, 1 - y, y)


def model_fn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 2))


def build():
    return {"model_fn": model_fn, "loss_fn": nn.functional.cross_entropy,
            "train_data": data(256, 0), "val_data": data(128, 1), "steps": 100}


def build_wrong_shape():
    pieces = build()
    x, y = pieces["train_data"]
    pieces["train_data"] = (x[:, :7], y)
    return pieces


def build_missing():
    pieces = build()
    del pieces["loss_fn"]
    return pieces


def build_list():
    return [1, 2, 3]
