"""Copy an object the three ways a user can: ``copy.deepcopy``, ``pickle``, ``torch.save``."""

from __future__ import annotations

import copy
import io
import pickle
from typing import Any

import torch

#: the ways :func:`copy_by` knows, for ``pytest.mark.parametrize("how", HOWS)``
HOWS = ("deepcopy", "pickle", "torch.save")


def copy_by(obj: Any, how: str) -> Any:
    """A copy of ``obj`` by ``how`` (``torch.save`` to memory, then ``weights_only=False``)."""
    if how == "deepcopy":
        return copy.deepcopy(obj)
    if how == "pickle":
        return pickle.loads(pickle.dumps(obj))
    return saved_and_loaded(obj, weights_only=False)


def saved_and_loaded(obj: Any, *, weights_only: bool = True) -> Any:
    """``obj`` after ``torch.save`` to memory and ``torch.load`` back (a checkpoint's trip)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=weights_only)
