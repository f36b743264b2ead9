"""One training run of one entrant on one problem: the unit every trial and seed run uses.

A run builds the problem's task for a seed, creates the optimizer, takes the
problem's step budget of ``train_step`` calls and evaluates every
``eval_every`` steps (and at step 0 and at the end). An optimizer with
``train()``/``eval()`` modes (Schedule-Free) trains in train mode and is
evaluated at its evaluation point, after which training resumes exactly
where it left (:func:`~descentlab.schedule_free.evaluation.evaluation_mode`).
It records:

- the evaluation curve (every metric the task reports, per evaluation step);
- steps and training wall time to the target: the first evaluation at which
  the problem's ``metric`` reaches ``target`` (time counts ``train_step``
  calls only, not evaluations); ``None`` if never reached;
- ``diverged``: a non-finite training loss or metric stops the run;
- ``state_bytes``: the optimizer's state, summed exactly over the tensors in
  ``optimizer.state``;
- ``peak_bytes`` (when asked): the peak of memory allocated during three
  training steps, measured with ``torch.profiler`` (``profile_memory=True``):
  allocation and free events of every operator, ordered by start time and
  summed; the peak of that running sum. This counts tensors torch allocates
  (activations, gradients, optimizer temporaries), not Python objects, so
  tracemalloc (which does not see torch's allocator) is not used.
- for 2-D analytic problems, the trajectory of ``task.position()``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from descentlab.bench.entrants import Entrant
from descentlab.schedule_free.evaluation import evaluation_mode, start_training
from descentlab.wrappers import OptimizerWrapper

__all__ = ["RunRecord", "StopRun", "run", "meets_target", "quiet_stderr", "task_problem"]

MAX_TRAJECTORY_POINTS = 201


class StopRun(Exception):
    """Raised by an ``on_eval`` callback to stop a run early (Optuna pruning)."""


@dataclass
class RunRecord:
    """What one run measured (see the module docstring for definitions)."""

    seed: int
    hparams: dict[str, float]
    final: dict[str, float]
    curve: list[dict[str, float]]
    steps_to_target: int | None
    time_to_target: float | None
    train_time: float
    diverged: bool
    state_bytes: int
    peak_bytes: int | None = None
    trajectory: list[list[float]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (used for the results store)."""
        return {
            "seed": self.seed,
            "hparams": self.hparams,
            "final": self.final,
            "curve": self.curve,
            "steps_to_target": self.steps_to_target,
            "time_to_target": self.time_to_target,
            "train_time": self.train_time,
            "diverged": self.diverged,
            "state_bytes": self.state_bytes,
            "peak_bytes": self.peak_bytes,
            "trajectory": self.trajectory,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Inverse of :meth:`to_dict`."""
        keys = {f for f in cls.__dataclass_fields__ if f != "extra"}
        return cls(**{k: data.get(k) for k in keys})


def meets_target(value: float, target: float, higher_is_better: bool) -> bool:
    """Whether a metric value reaches the target (``>=`` or ``<=`` by direction)."""
    if not math.isfinite(value):
        return False
    return value >= target if higher_is_better else value <= target


def task_problem(problem: Any, entrant: Entrant) -> Any:
    """The problem as the entrant runs it: full batch for gradient descent."""
    if entrant.full_batch and getattr(problem, "batch_size", None) is not None:
        return replace(problem, batch_size=None)
    return problem


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of tensor state of ``optimizer`` and of every optimizer it wraps."""
    total = 0
    chain: torch.optim.Optimizer | None = optimizer
    while chain is not None:
        for state in chain.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    total += value.numel() * value.element_size()
        chain = chain.optimizer if isinstance(chain, OptimizerWrapper) else None
    return total


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence what the profiler's C++ side prints on file descriptor 2 (warnings, kineto's
    ``profiler_start``/``profiler_stop`` lines) while the block runs."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _profile_peak(step: Callable[[], float], repeats: int = 3) -> int:
    from torch.profiler import ProfilerActivity, profile

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(repeats):
            step()
    events = [e for e in prof.events() if e.self_cpu_memory_usage != 0]
    events.sort(key=lambda e: e.time_range.start)
    current = peak = 0
    for event in events:
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return int(peak)


def run(
    problem: Any,
    entrant: Entrant,
    sampled: dict[str, float],
    seed: int,
    *,
    on_eval: Callable[[int, float], None] | None = None,
    measure_memory: bool = False,
    record_trajectory: bool = False,
) -> RunRecord:
    """Train ``entrant`` with setting ``sampled`` on ``problem`` for its step budget.

    ``on_eval(step, metric_value)`` is called after every evaluation except
    step 0 and may raise :class:`StopRun` (the record then ends there, with
    ``extra["stopped"] = True``). ``measure_memory`` profiles three extra
    training steps at the end (they do not count toward the budget or the
    curve). Deterministic for a given seed: torch's global RNG is seeded
    before the task is built.
    """
    torch.manual_seed(seed)
    task = task_problem(problem, entrant).build(seed)
    optimizer = entrant.build(task.parameters(), sampled)
    start_training(optimizer)  # Schedule-Free: train() before steps, eval() to evaluate
    schedule = entrant.attach_schedule(optimizer, int(problem.steps))
    metric, target, hib = problem.metric, float(problem.target), bool(problem.higher_is_better)
    every = max(1, int(problem.eval_every))
    position = getattr(task, "position", None)
    trajectory: list[list[float]] | None = None
    if record_trajectory and position is not None:
        trajectory = [[float(v) for v in position().detach().reshape(-1)[:2]]]

    curve: list[dict[str, float]] = []
    steps_to_target: int | None = None
    time_to_target: float | None = None
    train_time = 0.0
    diverged = stopped = False

    def evaluate(step: int) -> float:
        nonlocal steps_to_target, time_to_target, diverged
        with torch.no_grad(), evaluation_mode(optimizer):
            metrics = {k: float(v) for k, v in task.evaluate().items()}
        metrics["step"] = float(step)
        curve.append(metrics)
        value = metrics.get(metric, math.nan)
        if not all(math.isfinite(v) for v in metrics.values()):
            diverged = True
        if steps_to_target is None and meets_target(value, target, hib):
            steps_to_target, time_to_target = step, train_time
        return value

    evaluate(0)
    total = int(problem.steps)
    step = 0
    while step < total and not diverged:
        start = time.perf_counter()
        loss = float(task.train_step(optimizer))
        if schedule is not None:
            schedule.step()
        train_time += time.perf_counter() - start
        step += 1
        if trajectory is not None:
            with evaluation_mode(optimizer):  # Schedule-Free: the evaluation point x
                trajectory.append([float(v) for v in position().detach().reshape(-1)[:2]])
        if not math.isfinite(loss):
            diverged = True
        if step % every == 0 or step == total or diverged:
            value = evaluate(step)
            if on_eval is not None and not diverged:
                try:
                    on_eval(step, value)
                except StopRun:
                    stopped = True
                    break

    peak = None
    if measure_memory and not diverged:
        peak = _profile_peak(lambda: task.train_step(optimizer))
    if trajectory is not None and len(trajectory) > MAX_TRAJECTORY_POINTS:
        stride = math.ceil((len(trajectory) - 1) / (MAX_TRAJECTORY_POINTS - 1))
        trajectory = trajectory[::stride] + (
            [trajectory[-1]] if (len(trajectory) - 1) % stride else []
        )
    final = {k: v for k, v in curve[-1].items() if k != "step"}
    return RunRecord(
        seed=seed,
        hparams=dict(sampled),
        final=final,
        curve=curve,
        steps_to_target=steps_to_target,
        time_to_target=time_to_target,
        train_time=train_time,
        diverged=diverged,
        state_bytes=_state_bytes(optimizer),
        peak_bytes=peak,
        trajectory=trajectory,
        extra={"stopped": stopped, "steps_done": step},
    )
