"""Data that ships inside installed packages, split and scaled once per problem.

Nothing is downloaded: tabular and image data come from scikit-learn's bundled
datasets (``load_breast_cancer``, ``load_digits``, ``load_diabetes``) and text
from the Python standard library's own source files. Arrays are cached per
process, so building many tasks of one problem loads the data once.
"""

from __future__ import annotations

import functools
import os
import sysconfig
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "STDLIB_FILES",
    "VOCAB",
    "Split",
    "encode_text",
    "load_split",
    "stdlib_text",
]


@dataclass(frozen=True)
class Split:
    """A fixed train/validation split as float32 (inputs) tensors.

    Targets are int64 class indices for classification and float32 for regression.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


@functools.cache
def _raw(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    loaders = {
        "breast_cancer": datasets.load_breast_cancer,
        "digits": datasets.load_digits,
        "diabetes": datasets.load_diabetes,
    }
    if dataset not in loaders:
        valid = ", ".join(sorted(loaders))
        raise ValueError(f"unknown dataset {dataset!r}; valid names: {valid}")
    bunch = loaders[dataset]()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)


@functools.cache
def load_split(
    dataset: str, val_fraction: float, split_seed: int, scaling: str, regression: bool
) -> Split:
    """Load ``dataset``, shuffle with ``split_seed`` and hold out ``val_fraction`` of it.

    Args:
        dataset: ``"breast_cancer"``, ``"digits"`` or ``"diabetes"``.
        val_fraction: share of the rows held out for validation.
        split_seed: seed of the row permutation (``numpy.random.default_rng``).
        scaling: ``"standardize"`` (zero mean, unit variance per feature, using
            the *training* rows' statistics only), ``"unit"`` (divide by the
            largest training value, e.g. digits' 0..16 pixels to [0, 1]) or ``"none"``.
        regression: standardise the target with the training rows' mean and
            standard deviation (so a loss of 1 means "no better than the mean")
            and return it as float32; otherwise return int64 class indices.
    """
    x, y = _raw(dataset)
    order = np.random.default_rng(split_seed).permutation(len(x))
    n_val = int(round(val_fraction * len(x)))
    val, train = order[:n_val], order[n_val:]
    x_train, x_val = x[train], x[val]
    if scaling == "standardize":
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std[std == 0] = 1.0
        x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    elif scaling == "unit":
        top = np.abs(x_train).max()
        x_train, x_val = x_train / top, x_val / top
    elif scaling != "none":
        raise ValueError(f"scaling must be 'standardize', 'unit' or 'none', got {scaling!r}")
    y_train, y_val = y[train], y[val]
    if regression:
        mean, std = y_train.mean(), y_train.std()
        y_train, y_val = (y_train - mean) / std, (y_val - mean) / std
        ty_train = torch.tensor(y_train, dtype=torch.float32)
        ty_val = torch.tensor(y_val, dtype=torch.float32)
    else:
        ty_train = torch.tensor(y_train, dtype=torch.int64)
        ty_val = torch.tensor(y_val, dtype=torch.int64)
    return Split(
        torch.tensor(x_train, dtype=torch.float32),
        ty_train,
        torch.tensor(x_val, dtype=torch.float32),
        ty_val,
    )


#: Standard-library source files the language model reads, in this order.
STDLIB_FILES: tuple[str, ...] = ("textwrap.py", "heapq.py", "shlex.py", "queue.py")

#: The fixed character vocabulary: index 0 stands for any other character,
#: then newline and the 95 printable ASCII characters.
VOCAB: str = "\0\n" + "".join(chr(c) for c in range(32, 127))
_INDEX = {ch: i for i, ch in enumerate(VOCAB)}


@functools.cache
def stdlib_text(files: tuple[str, ...] = STDLIB_FILES, chars: int = 60_000) -> str:
    """The first ``chars`` characters of the concatenated standard-library ``files``.

    Files are read from ``sysconfig.get_paths()["stdlib"]`` as UTF-8; their
    content depends on the Python minor version, which is why the language-model
    problem records that version in its fingerprint.
    """
    root = sysconfig.get_paths()["stdlib"]
    parts = []
    for name in files:
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"standard-library file {name!r} not found under {root}")
        with open(path, encoding="utf-8") as handle:
            parts.append(handle.read())
    text = "".join(parts)
    if len(text) < chars:
        raise ValueError(f"chars={chars} exceeds the {len(text)} characters of {list(files)}")
    return text[:chars]


def encode_text(text: str) -> torch.Tensor:
    """Map characters to indices of :data:`VOCAB` (unknown characters to 0) as int64."""
    return torch.tensor([_INDEX.get(ch, 0) for ch in text], dtype=torch.int64)
