"""The exchange shared by the sparse hooks (threshold, top-k, DGC).

Each rank encodes the entries it sends as one message
(:mod:`~descentlab.distributed.coding`); the messages are all-gathered, and
every rank decodes all of them in rank order and adds them up, so every rank
computes the same average bit for bit. When every rank's message has the same
length, known in advance (fixed-width indices and the same count ``k`` on
every rank, as in top-k), one all-gather suffices; otherwise the lengths are
all-gathered first and the messages padded to the longest
(:func:`~descentlab.distributed.traffic.all_gather_varlen`).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from descentlab.distributed import coding
from descentlab.distributed.state import CommState
from descentlab.distributed.traffic import all_gather, all_gather_varlen

__all__ = ["SparseState", "select_count"]


def select_count(density: float, n: int) -> int:
    """Entries sent at ``density`` of an ``n``-entry bucket: ``ceil(density · n)``, at least 1."""
    return min(n, max(1, math.ceil(density * n)))


class SparseState(CommState):
    """A hook state that sends index/value messages.

    Args:
        index_coding: how indices are coded: ``"rice"`` (default), ``"bits"``,
            ``"int32"`` or ``"int64"`` (see :mod:`~descentlab.distributed.coding`).
        value_coding: ``"fp16"`` (default), ``"fp8"``, ``"bf16"``, ``"fp32"``
            (``"sign"`` only where the hook supplies the magnitude: threshold's
            sign messages).
        process_group: the group to exchange over; ``None`` is the default group.
    """

    #: whether the hook supplies the magnitude of sign-coded values
    signs_carry_magnitude = False

    def __init__(
        self, index_coding: str = "rice", value_coding: str = "fp16", process_group: Any = None
    ) -> None:
        coding.check_coding(index_coding, value_coding)
        if value_coding == "sign" and not self.signs_carry_magnitude:
            raise ValueError(
                f"{type(self).__name__} sends values: value_coding must be one of "
                f"{[c for c in coding.VALUE_CODINGS if c != 'sign']}, got 'sign'")
        self.index_coding = index_coding
        self.value_coding = value_coding
        self.sent_entries = 0  # entries this rank sent, over all buckets and steps
        super().__init__(process_group)

    def config(self) -> dict[str, Any]:
        """The codings (subclasses add their own settings)."""
        return {"index_coding": self.index_coding, "value_coding": self.value_coding}

    def exchange(
        self, indices: Tensor, values: Tensor, n: int, same_count: bool
    ) -> list[tuple[Tensor, Tensor]]:
        """Send this rank's entries; return every rank's ``(indices, decoded values)``.

        ``same_count`` says every rank sends ``len(indices)`` entries (then the
        messages are counted: one all-gather, no header, no length exchange).
        """
        self.sent_entries += len(indices)
        message = coding.encode(indices, values, n, self.index_coding, self.value_coding,
                                counted=same_count)
        if same_count:
            messages = all_gather(self.traffic, message, self.process_group)
        else:
            messages = all_gather_varlen(self.traffic, message, self.process_group)
        count = len(indices) if same_count else None
        return [coding.decode(m, n, self.index_coding, self.value_coding, count)
                for m in messages]

    def average(
        self, received: list[tuple[Tensor, Tensor]], like: Tensor, scale: float = 1.0
    ) -> Tensor:
        """``scale · Σ_ranks entries / world_size`` written into ``like`` (zeroed first)."""
        like.zero_()
        for indices, values in received:  # rank order: the same sum on every rank
            like[indices] += values.to(like.dtype)
        return like.mul_(scale / len(received))
