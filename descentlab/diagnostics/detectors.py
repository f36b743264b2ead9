"""Detectors: read a :class:`~descentlab.diagnostics.records.History`, return findings.

Each detector is a small dataclass holding its thresholds; calling it on a
history returns a :class:`~descentlab.diagnostics.findings.Finding` or
``None``. Detectors that look at the whole loss curve (non-finite values,
divergence, plateau) remember how far they have read, so a long run is
never rescanned; the others look only at the latest checks. Use one
detector instance per run. The signs they look for are seed 004's list: a flat loss with high
error, gradient norms near zero, stagnation, a jumping loss, and training
loss falling while validation loss rises; plus non-finite values, dead ReLU
units and an optimizer that does not move the weights.

Gradient sizes are judged *relative to each layer's scale*: a layer's
relative gradient is ``ρ = ‖g‖ / ‖θ‖``, so a layer with large weights is not
called exploding merely for having large gradients, and vice versa.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Sequence
from typing import Protocol

from descentlab.diagnostics.findings import Finding, FindingKind, Severity
from descentlab.diagnostics.records import Check, History
from descentlab.schedules.plateau import PlateauRule

__all__ = [
    "DeadReluDetector",
    "Detector",
    "DivergenceDetector",
    "ExplodingGradientDetector",
    "NonFiniteDetector",
    "OscillationDetector",
    "OverfittingDetector",
    "PlateauDetector",
    "PlateauRule",
    "StalledOptimizerDetector",
    "VanishingGradientDetector",
    "default_detectors",
    "plateau_indices",
]


class Detector(Protocol):
    """Anything callable on a history that may return a finding."""

    def __call__(self, history: History) -> Finding | None: ...


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _short(names: Sequence[str], limit: int = 6) -> list[str]:
    names = list(names)
    return names if len(names) <= limit else names[:limit] + [f"... ({len(names) - limit} more)"]


class _Cursor:
    """Remembers how much of a history a detector has read (losses and checks).

    Monitors keep only the latest checks (older ones are dropped), so checks
    are tracked by step; losses by index. A history that shrank or changed
    identity means a new run: the detector starts over.
    """

    def __init__(self) -> None:
        self.ident = -1
        self.losses = 0
        self.check_step = -1

    def restart(self, history: History) -> bool:
        if id(history) != self.ident or len(history.losses) < self.losses:
            self.ident, self.losses, self.check_step = id(history), 0, -1
            return True
        return False

    def advance(self, history: History) -> tuple[range, list[Check]]:
        new_losses = range(self.losses, len(history.losses))
        self.losses = len(history.losses)
        new_checks = []
        for c in reversed(history.checks):
            if c.step <= self.check_step:
                break
            new_checks.append(c)
        new_checks.reverse()
        if history.checks:
            self.check_step = max(self.check_step, history.checks[-1].step)
        return new_losses, new_checks


@dataclasses.dataclass
class NonFiniteDetector:
    """NaN/Inf in the loss, the gradients or an activation.

    Evidence names the first module that produced a non-finite output (found
    by replaying the forward pass with hooks before the update spreads it).
    Incremental: each call looks only at records added since the last one.
    """

    _cursor: _Cursor = dataclasses.field(default_factory=lambda: _Cursor(), repr=False)
    _bad_loss: tuple[int, float] | None = dataclasses.field(default=None, repr=False)
    _bad_grad: int | None = dataclasses.field(default=None, repr=False)

    def __call__(self, history: History) -> Finding | None:
        if self._cursor.restart(history):
            self._bad_loss = self._bad_grad = None
        new_losses, new_checks = self._cursor.advance(history)
        if self._bad_loss is None:
            for i in new_losses:
                if not math.isfinite(history.losses[i]):
                    self._bad_loss = (history.steps[i], history.losses[i])
                    break
        if self._bad_grad is None:
            for c in new_checks:
                if not c.grads_finite:
                    self._bad_grad = c.step
                    break
        trace = history.non_finite
        if self._bad_loss is None and self._bad_grad is None and trace is None:
            return None
        candidates = [history.last_step]
        if self._bad_loss is not None:
            candidates.append(self._bad_loss[0])
        if self._bad_grad is not None:
            candidates.append(self._bad_grad)
        if trace is not None:
            candidates.append(trace.step)
        evidence: dict[str, object] = {
            "first_non_finite_loss_step": None if self._bad_loss is None else self._bad_loss[0],
            "first_non_finite_gradient_step": self._bad_grad,
        }
        if trace is not None:
            evidence.update(
                module=trace.module,
                module_type=trace.module_type,
                parameters_finite=trace.parameters_finite,
                detail=trace.what,
            )
            where = f"first produced by module '{trace.module}' ({trace.module_type}): {trace.what}"
        else:
            where = "the producing module could not be traced (no forward pass was recorded)"
        return Finding(
            FindingKind.NON_FINITE,
            Severity.ERROR,
            min(candidates),
            f"non-finite values (NaN/Inf) appeared; {where}",
            evidence,
            "lower the learning rate, clip gradients (torch.nn.utils.clip_grad_norm_), check the "
            "inputs and any log/exp/division in that module; use a warm-up",
        )


@dataclasses.dataclass
class DivergenceDetector:
    """The loss blew up.

    Fires when a loss is non-finite, or when the mean of the last ``window``
    losses (fewer at the start) exceeds ``factor`` times the best such mean
    so far *and* the first loss (so a noisy batch late in training, still
    below the starting loss, is not mistaken for divergence).
    Default ``factor=4`` follows the usual learning-rate range-test stop rule.
    Incremental: each call looks only at losses added since the last one.
    """

    factor: float = 4.0
    window: int = 5
    _cursor: _Cursor = dataclasses.field(default_factory=lambda: _Cursor(), repr=False)
    _best: float = dataclasses.field(default=math.inf, repr=False)
    _found: Finding | None = dataclasses.field(default=None, repr=False)

    def __call__(self, history: History) -> Finding | None:
        if self._cursor.restart(history):
            self._best, self._found = math.inf, None
        new, _ = self._cursor.advance(history)
        if self._found is not None:
            return self._found
        losses, steps, w = history.losses, history.steps, self.window
        for i in new:
            v = losses[i]
            if not math.isfinite(v):
                self._found = Finding(
                    FindingKind.DIVERGENCE,
                    Severity.ERROR,
                    steps[i],
                    f"the loss became {v} at step {steps[i]}",
                    {"loss": v, "initial_loss": losses[0]},
                    "the learning rate is too large for this model: divide it by 10, or run "
                    "descentlab.diagnostics.lr_range_test; add warm-up or gradient clipping",
                )
                return self._found
            m = _mean(losses[max(0, i - w + 1) : i + 1])
            if m > self.factor * self._best and m > losses[0]:
                self._found = Finding(
                    FindingKind.DIVERGENCE,
                    Severity.ERROR,
                    steps[i],
                    f"the loss rose to {m:.4g}, more than {self.factor:g}x its best "
                    f"{self._best:.4g}",
                    {"loss": m, "best_loss": self._best, "initial_loss": losses[0], "window": w},
                    "the learning rate is too large: divide it by 10, or run "
                    "descentlab.diagnostics.lr_range_test; add warm-up or gradient clipping",
                )
                return self._found
            self._best = min(self._best, m)
        return None


def _weight_layers(check: Check) -> list[tuple[str, float]]:
    return [
        (name, st.relative_gradient)
        for name, st in check.layers.items()
        if math.isfinite(st.relative_gradient)
    ]


@dataclasses.dataclass
class VanishingGradientDetector:
    """Gradients too small, relative to each layer's own scale.

    A layer vanishes when its relative gradient ``ρ = ‖g‖/‖θ‖`` is below
    ``threshold`` (default 1e-5: a step with lr ≤ 1 changes the layer by
    less than one part in 10⁵) *or* below ``spread`` (default 1e-4) times the
    largest ρ in the network (the signal does not reach it). It must hold at
    ``patience`` consecutive checks.
    """

    threshold: float = 1e-5
    spread: float = 1e-4
    patience: int = 1

    def _vanished(self, check: Check) -> list[tuple[str, float]]:
        layers = _weight_layers(check)
        if not layers:
            return []
        top = max(r for _, r in layers)
        return [(n, r) for n, r in layers if r < self.threshold or r < self.spread * top]

    def __call__(self, history: History) -> Finding | None:
        if len(history.checks) < self.patience:
            return None
        recent = history.checks[-self.patience :]
        per = [self._vanished(c) for c in recent]
        if not all(per):
            return None
        last = recent[-1]
        layers = _weight_layers(last)
        bad = per[-1]
        top = max(r for _, r in layers)
        return Finding(
            FindingKind.VANISHING_GRADIENTS,
            Severity.WARNING,
            last.step,
            f"{len(bad)} of {len(layers)} layers get gradients below {self.threshold:g} of their "
            f"own scale (or {self.spread:g} of the best layer's); they are not learning",
            {
                "layers": _short([n for n, _ in bad]),
                "smallest_relative_gradient": min(r for _, r in bad),
                "largest_relative_gradient": top,
                "threshold": self.threshold,
            },
            "use an initialisation matched to the activation (descentlab.init: 'kaiming_normal' "
            "for ReLU, 'xavier_normal' for tanh, or 'lsuv'), add normalisation layers or "
            "residual connections, or use fewer layers",
        )


@dataclasses.dataclass
class ExplodingGradientDetector:
    """Gradients too large, relative to each layer's own scale or history.

    A layer explodes when ``ρ = ‖g‖/‖θ‖`` exceeds ``threshold`` (default 10:
    the gradient is ten times the weights) or when its gradient norm exceeds
    ``spike`` (default 100) times the median of its previous checks (at least
    three of them, at most ``memory`` = 20).
    """

    threshold: float = 10.0
    spike: float = 100.0
    memory: int = 20

    def __call__(self, history: History) -> Finding | None:
        if not history.checks:
            return None
        last = history.checks[-1]
        prev = history.checks[-self.memory - 1 : -1]
        bad: list[tuple[str, float, str]] = []
        for name, st in last.layers.items():
            rho = st.relative_gradient
            if math.isfinite(rho) and rho > self.threshold:
                bad.append((name, rho, "relative"))
                continue
            past = [c.layers[name].grad_norm for c in prev if name in c.layers]
            past = [g for g in past if math.isfinite(g)]
            if len(past) >= 3:
                med = _median(past)
                if med > 0 and st.grad_norm > self.spike * med:
                    bad.append((name, st.grad_norm / med, "spike"))
        if not bad:
            return None
        return Finding(
            FindingKind.EXPLODING_GRADIENTS,
            Severity.WARNING,
            last.step,
            f"{len(bad)} layers have gradients far above their own scale "
            f"(ρ = ‖g‖/‖θ‖ > {self.threshold:g} or a {self.spike:g}x jump)",
            {
                "layers": _short([n for n, _, _ in bad]),
                "largest_ratio": max(r for _, r, _ in bad),
                "criteria": sorted({c for _, _, c in bad}),
            },
            "clip gradients (torch.nn.utils.clip_grad_norm_), lower the learning rate, use an "
            "initialisation with smaller gain (descentlab.init) or add normalisation layers",
        )


def plateau_indices(
    values: Sequence[float],
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
) -> list[int]:
    """Indices at which ``ReduceLROnPlateau`` (mode "min") would reduce the learning rate.

    Uses :class:`~descentlab.schedules.plateau.PlateauRule`, the rule
    :class:`~descentlab.schedules.plateau.ReduceOnPlateau` applies.
    """
    rule = PlateauRule(patience, threshold, threshold_mode, cooldown)
    return [i for i, v in enumerate(values) if rule.step(v)]


@dataclasses.dataclass
class PlateauDetector:
    """The loss stopped improving: ReduceLROnPlateau's rule (see :class:`PlateauRule`).

    Applied to the validation losses when there are any (one value per
    evaluation, like an epoch), otherwise to the training loss averaged over
    consecutive blocks of ``window`` steps. Incremental.
    """

    patience: int = 10
    threshold: float = 1e-4
    window: int = 50
    _state: tuple[int, str, int] = dataclasses.field(default=(-1, "", 0), repr=False)
    _rule: PlateauRule | None = dataclasses.field(default=None, repr=False)
    _found: Finding | None = dataclasses.field(default=None, repr=False)

    def __call__(self, history: History) -> Finding | None:
        w = self.window
        if history.val_losses:
            values, steps, source = history.val_losses, history.val_steps, "validation loss"
            total = len(values)
        else:
            source = f"training loss (mean over blocks of {w} steps)"
            total = len(history.losses) // w
        ident, src, seen = self._state
        if ident != id(history) or src != source or total < seen:
            self._rule, self._found, seen = PlateauRule(self.patience, self.threshold), None, 0
        self._state = (id(history), source, total)
        if self._found is not None or self._rule is None:
            return self._found
        for i in range(seen, total):
            if history.val_losses:
                value, step = values[i], steps[i]
            else:
                value = _mean(history.losses[i * w : (i + 1) * w])
                step = history.steps[(i + 1) * w - 1]
            if self._rule.step(value):
                self._found = Finding(
                    FindingKind.PLATEAU,
                    Severity.WARNING,
                    step,
                    f"the {source} has not improved by more than {self.threshold:g} (relative) "
                    f"for {self.patience + 1} evaluations; it stays near {value:.4g}",
                    {"source": source, "value": value, "best": self._rule.best},
                    "if the loss is still high: check for vanishing gradients or a saddle point "
                    "(descentlab.diagnostics.curvature), try momentum or Adam, or raise the "
                    "learning rate; if it is low: lower the learning rate (ReduceLROnPlateau) "
                    "or stop",
                )
                return self._found
        return None


@dataclasses.dataclass
class OscillationDetector:
    """The loss jumps up and down instead of decreasing.

    Over the last ``window`` losses: the successive differences change sign
    in at least ``sign_changes`` of the cases (0.6; i.i.d. noise gives about
    0.67, a steady descent about 0) *and* the median jump is at least
    ``amplitude`` (0.5) times the median loss, *and* the second half of the
    window is not lower than the first half by more than one median jump.
    """

    window: int = 20
    sign_changes: float = 0.6
    amplitude: float = 0.5

    def __call__(self, history: History) -> Finding | None:
        xs = history.losses[-self.window :]
        if len(xs) < self.window or not all(math.isfinite(x) for x in xs):
            return None
        d = [b - a for a, b in zip(xs, xs[1:], strict=False)]
        flips = sum(1 for a, b in zip(d, d[1:], strict=False) if a * b < 0) / max(len(d) - 1, 1)
        jump = _median([abs(v) for v in d])
        level = _median([abs(x) for x in xs])
        if level <= 0:
            return None
        half = len(xs) // 2
        progress = _mean(xs[:half]) - _mean(xs[half:])
        if flips >= self.sign_changes and jump >= self.amplitude * level and progress < jump:
            return Finding(
                FindingKind.OSCILLATION,
                Severity.WARNING,
                history.steps[-1],
                f"the loss jumps by {jump / level:.0%} of its level from step to step and "
                f"changes direction {flips:.0%} of the time without going down",
                {"sign_change_rate": flips, "relative_jump": jump / level, "window": len(xs)},
                "lower the learning rate (or add momentum/averaging); use a larger batch; "
                "check the edge of stability (λ_max·lr against 2)",
            )
        return None


@dataclasses.dataclass
class OverfittingDetector:
    """Training loss goes down while validation loss goes up.

    Fires when the validation loss has not improved for ``patience``
    evaluations, is now more than ``min_increase`` (relative, 5%) above its
    best, and the training loss (mean of the ``window`` steps before each
    evaluation) has fallen since the best validation loss.
    """

    patience: int = 3
    min_increase: float = 0.05
    window: int = 10

    def _train_near(self, history: History, step: int) -> float | None:
        hi = bisect.bisect_right(history.steps, step)
        xs = history.losses[max(0, hi - self.window) : hi]
        return _mean(xs) if xs else None

    def __call__(self, history: History) -> Finding | None:
        vals = history.val_losses
        if len(vals) < self.patience + 1:
            return None
        b = min(range(len(vals)), key=vals.__getitem__)
        if len(vals) - 1 - b < self.patience or vals[-1] <= vals[b] * (1 + self.min_increase):
            return None
        t_best = self._train_near(history, history.val_steps[b])
        t_now = self._train_near(history, history.val_steps[-1])
        if t_best is None or t_now is None or not t_now < t_best:
            return None
        return Finding(
            FindingKind.OVERFITTING,
            Severity.WARNING,
            history.val_steps[-1],
            f"validation loss rose from {vals[b]:.4g} to {vals[-1]:.4g} while training loss "
            f"fell from {t_best:.4g} to {t_now:.4g}",
            {
                "best_validation_step": history.val_steps[b],
                "best_validation_loss": vals[b],
                "validation_loss": vals[-1],
                "train_loss_then": t_best,
                "train_loss_now": t_now,
            },
            "stop early (keep the checkpoint at the best validation step), add weight decay "
            "(AdamW), dropout or data augmentation, or use a smaller model",
        )


@dataclasses.dataclass
class DeadReluDetector:
    """ReLU units that output zero for every example of the batch.

    Fires when some ReLU module has at least ``threshold`` (50%) dead units at
    ``patience`` consecutive checks.
    """

    threshold: float = 0.5
    patience: int = 2

    def __call__(self, history: History) -> Finding | None:
        recent = history.checks[-self.patience :]
        if len(recent) < self.patience or not recent[-1].activations:
            return None
        bad = {}
        for name, st in recent[-1].activations.items():
            fracs = [c.activations[name].dead_fraction for c in recent if name in c.activations]
            if len(fracs) == self.patience and all(f >= self.threshold for f in fracs):
                bad[name] = st.dead_fraction
        if not bad:
            return None
        return Finding(
            FindingKind.DEAD_RELU,
            Severity.WARNING,
            recent[-1].step,
            f"{len(bad)} ReLU layers have at least {self.threshold:.0%} units that output zero "
            "for every example",
            {"layers": _short(list(bad)), "dead_fraction": max(bad.values())},
            "lower the learning rate, initialise biases at a small positive value or use "
            "Kaiming initialisation, or switch to LeakyReLU/GELU",
        )


@dataclasses.dataclass
class StalledOptimizerDetector:
    """The optimizer does not change the weights.

    Fires when parameters with a nonzero gradient did not move in the step
    (learning rate zero, a frozen group, a skipped step), or when parameters
    receive gradients but are not in any of the optimizer's parameter groups
    (the classic "optimizer built from the wrong model" bug).
    """

    tolerance: float = 0.0

    def __call__(self, history: History) -> Finding | None:
        if not history.checks:
            return None
        c = history.checks[-1]
        frozen = [
            n
            for n, st in c.layers.items()
            if st.update_norm is not None
            and math.isfinite(st.grad_norm)
            and st.grad_norm > 0
            and st.update_norm <= self.tolerance * max(st.param_norm, 1.0)
        ]
        if not frozen and not c.not_in_optimizer:
            return None
        parts = []
        if frozen:
            parts.append(f"{len(frozen)} layers with nonzero gradients did not move")
        if c.not_in_optimizer:
            parts.append(
                f"{len(c.not_in_optimizer)} parameters get gradients but are not in the optimizer"
            )
        return Finding(
            FindingKind.STALLED_OPTIMIZER,
            Severity.ERROR if len(frozen) == len(c.layers) else Severity.WARNING,
            c.step,
            "; ".join(parts),
            {
                "unchanged_layers": _short(frozen),
                "not_in_optimizer": _short(c.not_in_optimizer),
                "learning_rates": c.lrs,
            },
            "check the learning rate (and the scheduler), that the optimizer was built from "
            "this model's parameters, and that optimizer.step() is called after backward()",
        )


def default_detectors() -> list[Detector]:
    """One instance of every detector with its default thresholds."""
    return [
        NonFiniteDetector(),
        DivergenceDetector(),
        ExplodingGradientDetector(),
        VanishingGradientDetector(),
        PlateauDetector(),
        OscillationDetector(),
        OverfittingDetector(),
        DeadReluDetector(),
        StalledOptimizerDetector(),
    ]
