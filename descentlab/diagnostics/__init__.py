"""Diagnostics: tell the user why training is slow, stuck or unstable.

* :class:`TrainingMonitor` — attach to a model and optimizer with one call;
  records per-layer gradient norms, update ratios, effective learning rates
  and loss curves; detectors (:mod:`.detectors`) turn them into typed
  :class:`Finding` objects with evidence and a remedy.
* :mod:`.curvature` — Hessian-vector products, top/bottom eigenvalues (power
  iteration with deflation, Lanczos), Hutchinson trace, spectral density
  (stochastic Lanczos quadrature), saddle and edge-of-stability checks.
* :mod:`.lr_finder` — learning-rate range test.
* :mod:`.landscape` — 1-D interpolation, 2-D filter-normalised planes, paths.
* :mod:`.report` — terminal and self-contained HTML summaries;
  :mod:`.tensorboard` — optional TensorBoard logging.
* :func:`diagnose` — a training loop under the monitor (``descentlab diagnose``).
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
from descentlab.diagnostics.landscape import (
    LandscapeLine,
    LandscapeSurface,
    interpolate,
    loss_surface,
    pca_directions,
    project_path,
    random_direction,
)
from descentlab.diagnostics.lr_finder import LRRangeResult, lr_range_test
from descentlab.diagnostics.monitor import DEFAULT_INTERVAL, TrainingMonitor, trace_non_finite
from descentlab.diagnostics.report import html_report, print_summary, text_summary, write_html
from descentlab.diagnostics.run import DiagnoseProblem, diagnose
from descentlab.diagnostics.tensorboard import log_to_tensorboard

__all__ = [
    "DEFAULT_INTERVAL",
    "DiagnoseProblem",
    "Finding",
    "FindingKind",
    "HessianOperator",
    "LRRangeResult",
    "LandscapeLine",
    "LandscapeSurface",
    "Severity",
    "SpectralDensity",
    "TraceEstimate",
    "TrainingMonitor",
    "default_detectors",
    "diagnose",
    "edge_of_stability",
    "extreme_eigenvalues",
    "html_report",
    "hutchinson_trace",
    "interpolate",
    "lanczos",
    "log_to_tensorboard",
    "loss_surface",
    "lr_range_test",
    "pca_directions",
    "power_iteration",
    "print_summary",
    "project_path",
    "random_direction",
    "saddle_check",
    "spectral_density",
    "text_summary",
    "trace_non_finite",
    "write_html",
]
