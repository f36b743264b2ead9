"""The problem interface shared by the problem suite and the benchmark harness.

A :class:`Problem` is a *fixed, versioned* description of an optimisation task:
its data, model, batch size, step budget, target metric, train/validation split
and data seed (benchmark protocol, ``DESIGN.md`` section 5, after DeepOBS and
MLCommons AlgoPerf). Any change to what a problem computes bumps its
``version`` and therefore its :meth:`Problem.fingerprint`, so old results are
never mixed with new ones.

``Problem.build(seed)`` returns a fresh :class:`Task`: the parameters to optimise
and the functions that take a step and evaluate. The data split is fixed by the
problem (``split_seed``), while ``seed`` only drives the initialisation, the
mini-batch order and any gradient noise, so that several seeds of one problem
measure an optimizer's variance and nothing else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["KINDS", "Problem", "Task", "check_seed", "closure_step"]

#: The two kinds of problem.
KINDS: tuple[str, ...] = ("analytic", "learning")


@runtime_checkable
class Task(Protocol):
    """One built instance of a :class:`Problem`, ready to be optimised.

    ``position`` is a callable returning the current point ``(x, y)`` as a
    detached tensor for analytic 2-D problems (used to draw trajectories), and
    ``None`` for every other problem.
    """

    position: Callable[[], torch.Tensor] | None

    def parameters(self) -> list[torch.nn.Parameter]:
        """The parameters to hand to the optimizer (the same objects on every call)."""
        ...

    def train_step(self, optimizer: torch.optim.Optimizer) -> float:
        """Take one optimizer step on the next mini-batch and return that batch's loss.

        The step is taken as ``optimizer.step(closure)``, where ``closure``
        zeroes the gradients, computes the loss and back-propagates, so
        closure-based optimizers (L-BFGS, line searches) work unchanged. The
        returned loss is the one computed *before* the update (as
        ``torch.optim`` returns it); it may be ``inf``/``nan`` if the run diverged.
        """
        ...

    def evaluate(self) -> dict[str, float]:
        """Metrics on the full train and validation sets.

        Always ``'train_loss'`` and ``'val_loss'``; analytic problems also give
        ``'loss'`` (the function value, equal to both); classification problems
        also give ``'train_accuracy'`` and ``'val_accuracy'`` (fractions in [0, 1]).
        """
        ...


def check_seed(seed: Any) -> int:
    """Check that ``seed`` is a non-negative ``int`` and return it."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed!r}")
    return seed


def closure_step(
    optimizer: torch.optim.Optimizer, compute_loss: Callable[[], torch.Tensor]
) -> float:
    """Run ``optimizer.step(closure)`` and return the loss of the closure's first call.

    The closure zeroes the gradients, computes ``compute_loss()`` and
    back-propagates. Taking the first call's value (rather than what ``step``
    returns) gives the same number for every optimizer, closure-based or not.
    """
    losses: list[float] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = compute_loss()
        loss.backward()
        losses.append(float(loss.detach()))
        return loss

    optimizer.step(closure)
    if not losses:
        raise RuntimeError(
            f"{type(optimizer).__name__}.step(closure) did not call the closure"
        )
    return losses[0]


@dataclass(frozen=True)
class Problem:
    """A fixed, versioned optimisation problem.

    Attributes:
        name: registry key, e.g. ``"rosenbrock"`` or ``"digits_mlp"``.
        version: bumped whenever data, model, budget or target change.
        description: one line, shown by ``descentlab list``.
        kind: ``"analytic"`` or ``"learning"``.
        steps: the step budget of one run.
        batch_size: mini-batch size; ``None`` means full batch.
        metric: name of the target metric, a key of ``Task.evaluate()``
            (e.g. ``"loss"``, ``"val_loss"``, ``"val_accuracy"``).
        target: the value of ``metric`` that counts as solved.
        higher_is_better: direction of ``metric``.
        eval_every: evaluate every this many steps.
        split_seed: seed of the fixed train/validation split (and of any
            generated data); part of the problem, not of the run.
        val_fraction: share of the data held out for validation (``0`` for
            analytic problems).
        config: further fixed settings (model sizes, loss, ...) as sorted
            ``(key, value)`` pairs; they enter the fingerprint.
        builder: ``builder(problem, seed) -> Task``; a module-level function
            so that problems pickle into worker processes.
    """

    name: str
    version: int
    description: str
    kind: str
    steps: int
    batch_size: int | None
    metric: str
    target: float
    higher_is_better: bool
    eval_every: int
    split_seed: int = 0
    val_fraction: float = 0.0
    config: tuple[tuple[str, Any], ...] = ()
    builder: Callable[[Problem, int], Task] | None = field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        for name in ("version", "steps", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be None or an int >= 1, got {self.batch_size!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction!r}")

    @property
    def settings(self) -> dict[str, Any]:
        """The problem's fixed settings as a plain dict (``config`` merged in)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in
               ("builder", "config")}
        out["config"] = {k: v for k, v in self.config}
        return out

    def fingerprint(self) -> str:
        """A stable 16-hex-digit hash of the name, version and every setting.

        Computed from canonical JSON (sorted keys), so it is the same in every
        process and on every machine; it changes whenever any field changes.
        """
        text = json.dumps(self.settings, sort_keys=True, default=repr)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def build(self, seed: int = 0) -> Task:
        """Build a fresh task; deterministic given ``seed``.

        The data and its split are fixed by the problem; ``seed`` sets the
        initial parameters, the mini-batch order and any gradient noise.
        """
        seed = check_seed(seed)
        if self.builder is None:
            raise ValueError(f"problem {self.name!r} has no builder")
        return self.builder(self, seed)

    def reached(self, value: float) -> bool:
        """Whether ``value`` of :attr:`metric` meets the target (``nan`` never does)."""
        if value != value:  # nan
            return False
        return value >= self.target if self.higher_is_better else value <= self.target
