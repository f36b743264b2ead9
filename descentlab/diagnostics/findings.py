"""Typed findings: what a detector concluded, how sure, the evidence and a remedy.

A :class:`Finding` is the single currency of :mod:`descentlab.diagnostics`:
detectors, curvature checks and the learning-rate range test all return
them, and the terminal/HTML reports render them.
"""

from __future__ import annotations

import dataclasses
import math
from enum import Enum
from typing import Any

__all__ = ["Finding", "FindingKind", "Severity"]


class Severity(str, Enum):
    """How urgent a finding is.

    ``INFO``: worth knowing, training can go on. ``WARNING``: training is
    slow or at risk; change something. ``ERROR``: training is broken
    (non-finite values, divergence); further steps are wasted.
    """

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        """0 for info, 1 for warning, 2 for error (for sorting)."""
        return {"info": 0, "warning": 1, "error": 2}[self.value]


class FindingKind(str, Enum):
    """The problems descentlab recognises (seed 004's list plus curvature)."""

    NON_FINITE = "non_finite"
    DIVERGENCE = "divergence"
    EXPLODING_GRADIENTS = "exploding_gradients"
    VANISHING_GRADIENTS = "vanishing_gradients"
    PLATEAU = "plateau"
    OSCILLATION = "oscillation"
    OVERFITTING = "overfitting"
    DEAD_RELU = "dead_relu"
    STALLED_OPTIMIZER = "stalled_optimizer"
    SADDLE_POINT = "saddle_point"
    EDGE_OF_STABILITY = "edge_of_stability"


def _plain(value: Any) -> Any:
    """Turn evidence into JSON-friendly Python values (floats, lists, dicts, str)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    if hasattr(value, "item") and getattr(value, "numel", lambda: 2)() == 1:
        return _plain(value.item())
    return str(value)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One diagnosis.

    Attributes:
        kind: which problem (a :class:`FindingKind`).
        severity: how urgent (a :class:`Severity`).
        step: optimizer step at which the detector fired (``-1`` when the
            finding is not tied to a step, e.g. a one-off curvature check).
        message: one sentence for a human.
        evidence: the numbers the verdict rests on (layer names, norms,
            thresholds); JSON-serialisable after :meth:`to_dict`.
        remedy: what to try first.
    """

    kind: FindingKind
    severity: Severity
    step: int
    message: str
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)
    remedy: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dictionary (enums as their string values)."""
        return {
            "kind": self.kind.value,
            "severity": self.severity.value,
            "step": self.step,
            "message": self.message,
            "evidence": _plain(self.evidence),
            "remedy": self.remedy,
        }

    def __str__(self) -> str:
        where = f" at step {self.step}" if self.step >= 0 else ""
        return f"[{self.severity.value}] {self.kind.value}{where}: {self.message}"
