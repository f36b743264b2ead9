"""Diagnostics: tell the user why training is slow, stuck or unstable.

* :class:`TrainingMonitor` — attach to a model and optimizer with one call;
  records per-layer gradient norms, update ratios, effective learning rates
  and loss curves; detectors turn them into typed :class:`Finding` objects.
* :mod:`.curvature` — Hessian-vector products, top/bottom eigenvalues,
  Hutchinson trace, spectral density, saddle and edge-of-stability checks.
* :mod:`.report` — terminal and self-contained HTML summaries.
"""

from descentlab.diagnostics.curvature import (
    HessianOperator,
    SpectralDensity,
    TraceEstimate,
    edge_of_stability,
    extreme_eigenvalues,
    hutchinson_trace,
    lanczos,
    power_iteration,
    saddle_check,
    spectral_density,
)
from descentlab.diagnostics.detectors import default_detectors
from descentlab.diagnostics.findings import Finding, FindingKind, Severity
from descentlab.diagnostics.monitor import DEFAULT_INTERVAL, TrainingMonitor, trace_non_finite
from descentlab.diagnostics.report import html_report, print_summary, text_summary, write_html

__all__ = [
    "DEFAULT_INTERVAL",
    "Finding",
    "FindingKind",
    "HessianOperator",
    "Severity",
    "SpectralDensity",
    "TraceEstimate",
    "TrainingMonitor",
    "default_detectors",
    "edge_of_stability",
    "extreme_eigenvalues",
    "html_report",
    "hutchinson_trace",
    "lanczos",
    "power_iteration",
    "print_summary",
    "saddle_check",
    "spectral_density",
    "text_summary",
    "trace_non_finite",
    "write_html",
]
