"""What the :class:`~descentlab.diagnostics.TrainingMonitor` records.

Plain dataclasses, so detectors can be tested on hand-made histories.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["ActivationStats", "Check", "History", "LayerStats", "NonFiniteTrace"]

_TINY = 1e-30


@dataclasses.dataclass
class LayerStats:
    """Norms of one layer (a module that owns parameters) at one monitored step.

    ``param_norm`` and ``grad_norm`` are Euclidean norms over all the layer's
    own parameters (weight and bias together), taken just before
    ``optimizer.step()``; ``update_norm`` is ``‖θ_after − θ_before‖`` of the
    same step, or ``None`` before the step has run.
    """

    name: str
    numel: int
    param_norm: float
    grad_norm: float
    update_norm: float | None = None

    @property
    def relative_gradient(self) -> float:
        """``‖g‖ / ‖θ‖``: the gradient measured in units of the layer's own scale.

        ``nan`` when the layer's parameters are all zero (no scale to judge by).
        """
        if self.param_norm <= _TINY:
            return math.nan
        return self.grad_norm / self.param_norm

    @property
    def update_ratio(self) -> float:
        """``‖Δθ‖ / ‖θ‖``, the update-to-parameter ratio (healthy: around 1e-3)."""
        if self.update_norm is None or self.param_norm <= _TINY:
            return math.nan
        return self.update_norm / self.param_norm

    @property
    def effective_lr(self) -> float:
        """``‖Δθ‖ / ‖g‖``: the step size actually taken per unit of gradient.

        Equals ``lr`` for plain SGD; for adaptive methods (Adagrad, RMSprop,
        Adam, ...) it is the learning rate after preconditioning and momentum,
        measured from the public optimizer API only.
        """
        if self.update_norm is None or self.grad_norm <= _TINY:
            return math.nan
        return self.update_norm / self.grad_norm


@dataclasses.dataclass
class ActivationStats:
    """Output statistics of one ReLU module in a monitored forward pass.

    ``dead_fraction`` is the share of units (features/channels) whose output
    was ``<= 0`` for every example of the batch.
    """

    name: str
    dead_fraction: float


@dataclasses.dataclass
class NonFiniteTrace:
    """Where non-finite values first appeared.

    ``module`` is the qualified name of the first module (in execution order)
    whose output contained NaN/Inf although its inputs were finite;
    ``"<input>"`` when the model's input was already non-finite. ``what`` says
    whether the module's parameters are non-finite too.
    """

    step: int
    module: str
    module_type: str
    parameters_finite: bool
    what: str


@dataclasses.dataclass
class Check:
    """Everything measured at one monitored step."""

    step: int
    layers: dict[str, LayerStats]
    lrs: list[float]
    activations: dict[str, ActivationStats] = dataclasses.field(default_factory=dict)
    grads_finite: bool = True
    without_grad: list[str] = dataclasses.field(default_factory=list)
    not_in_optimizer: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class History:
    """The monitor's record: loss curves and per-check layer statistics."""

    steps: list[int] = dataclasses.field(default_factory=list)
    losses: list[float] = dataclasses.field(default_factory=list)
    val_steps: list[int] = dataclasses.field(default_factory=list)
    val_losses: list[float] = dataclasses.field(default_factory=list)
    checks: list[Check] = dataclasses.field(default_factory=list)
    non_finite: NonFiniteTrace | None = None

    @property
    def last_step(self) -> int:
        """The latest step seen in any record (``-1`` when empty)."""
        candidates = [-1]
        if self.steps:
            candidates.append(self.steps[-1])
        if self.checks:
            candidates.append(self.checks[-1].step)
        return max(candidates)
