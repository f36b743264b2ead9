"""A run's scalar state as 0-dim tensors over host memory, read and written without torch ops.

A rule's scalar state (NAdam's running product of momentum coefficients, for
example) is one float64 entry per parameter in its bucket; each run of the
flat engines hands the rule (or its compiled kernel) the run's values as
0-dim tensors and writes the results back. Done with torch ops (a select,
a clone, ``item``, ``fill_`` and a slice assignment per key), that is five
dispatches per step, each tens of microseconds right after another step has
evicted the dispatcher's code and data from the caches. On the CPU the flat
engines instead keep one :class:`HostScalars` per bucket: each key's 0-dim
tensor views a one-element host array, so any code using tensor ops sees
and writes the same memory, while the compiled kernels' scalar part reads
and writes the floats directly (:meth:`HostScalars.value`, :meth:`HostScalars.set`).
"""

from __future__ import annotations

import array
import threading
from collections.abc import Iterable

import torch

__all__ = ["HostScalars", "ThreadArrays", "host_tensor"]

_DTYPES = {"d": torch.float64, "f": torch.float32}


def host_tensor(values: array.array) -> torch.Tensor:
    """A CPU tensor over the memory of ``values`` (typecode ``"d"``: float64, ``"f"``:
    float32): what is written into the array is the tensor's value, without a torch op.

    The flat engines' hot path hands kernels their small inputs this way (a compiled
    kernel's coefficients, the step torch's fused kernels read, a run's scalar state).
    The array must keep its length while the tensor lives.
    """
    return torch.frombuffer(values, dtype=_DTYPES[values.typecode])


class HostScalars(dict):
    """``key → 0-dim float64 CPU tensor`` over ``cells[key]``, a one-element ``array("d")``."""

    def __init__(self, keys: Iterable[str]) -> None:
        super().__init__()
        self.cells: dict[str, array.array] = {}
        for key in keys:
            cell = array.array("d", [0.0])
            self.cells[key] = cell
            self[key] = host_tensor(cell)[0]

    def value(self, key: str) -> float:
        """The float held for ``key`` (what ``float(self[key])`` gives, without a torch op)."""
        return self.cells[key][0]

    def set(self, key: str, value: float) -> None:
        """Hold ``value`` for ``key`` (what ``self[key].fill_(value)`` does, without a torch op)."""
        self.cells[key][0] = value


class ThreadArrays:
    """One host array of ``n`` values per thread, with the CPU tensor over it
    (:func:`host_tensor`; its 0-dim view of the first value when ``scalar``).

    For small inputs a call writes and a kernel reads before the call returns (a compiled
    kernel's coefficients, the step torch's fused kernels read): the next call of the same
    thread may overwrite them, and threads sharing a kernel never see each other's.
    """

    def __init__(self, typecode: str, *, scalar: bool = False) -> None:
        self.typecode, self.scalar = typecode, scalar
        self._local = threading.local()

    def get(self, n: int) -> tuple[array.array, torch.Tensor]:
        """This thread's array of ``n`` values and the tensor over it (made at first use)."""
        held = getattr(self._local, "held", None)
        if held is None or len(held[0]) != n:
            values = array.array(self.typecode, [0.0] * n)
            tensor = host_tensor(values)
            held = self._local.held = (values, tensor[0] if self.scalar else tensor)
        return held
