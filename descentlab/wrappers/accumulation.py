"""Gradient accumulation as an optimizer: step once every ``accumulation_steps`` micro-batches.

The arithmetic and the one-call helpers (:func:`~descentlab.accumulation.accumulate_gradients`,
:func:`~descentlab.accumulation.split_batch`) live in :mod:`descentlab.accumulation`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from descentlab.optim.validation import check_int
from descentlab.wrappers.base import OptimizerWrapper

__all__ = ["GradientAccumulator"]


class GradientAccumulator(OptimizerWrapper):
    """Step the inner optimizer once every ``accumulation_steps`` micro-batches.

    Two ways to use it:

    * **streaming with** :meth:`backward` (the loss is weighted before
      ``backward()``)::

          acc = GradientAccumulator(optimizer, accumulation_steps=4)
          for x, y in loader:                      # micro-batches
              if acc.backward(loss_fn(model(x), y)):
                  scheduler.step()                  # once per optimizer step

      :meth:`backward` scales a mean loss by ``1 / accumulation_steps``, which
      equals one large batch when every micro-batch has the same size (give
      ``weight=n_i / N`` yourself otherwise); after the last micro-batch of a
      group it steps the inner optimizer and zeroes the gradients.

    * **as a drop-in optimizer** in an unchanged training loop
      (``opt.zero_grad(); loss.backward(); opt.step()`` per micro-batch):
      :meth:`step` counts micro-batches and on every ``accumulation_steps``-th
      call divides the summed gradients by the count (the mean over the
      micro-batches) and steps the inner optimizer; :meth:`zero_grad` only
      zeroes when no micro-batch is pending, so the sum survives the loop's
      calls. ``stepped`` says whether the last call stepped the inner optimizer
      (step schedulers only then: a scheduler stepped every call counts
      micro-batches).

    ``clip`` is called on the parameters just before each inner step (e.g.
    ``lambda ps: clip_grad_norm_(ps, 1.0)``). :meth:`flush` steps on a partial
    group (end of epoch), rescaling it to a mean over the micro-batches it saw.
    To skip non-finite accumulated steps, wrap the inner optimizer:
    ``GradientAccumulator(NonFiniteGuard(opt), 4)`` (the guard then checks the
    sum, once per inner step).

    ``state_dict`` saves the counters ``pending`` and ``optimizer_steps``, not
    the partial gradient sum: save at a step boundary (``pending == 0``).
    """

    _saved_attributes = ("pending", "optimizer_steps")

    def __init__(
        self,
        optimizer: Optimizer,
        accumulation_steps: int,
        clip: Callable[[list[torch.Tensor]], Any] | None = None,
    ) -> None:
        super().__init__(optimizer)
        self.accumulation_steps = check_int("accumulation_steps", accumulation_steps, minimum=1)
        if clip is not None and not callable(clip):
            raise TypeError(f"clip must be callable or None, got {type(clip).__name__}")
        self.clip = clip
        self.pending = 0
        self.optimizer_steps = 0
        self.stepped = False
        self._style: str | None = None  # "backward" or "step": how the pending group was fed

    def _count(self, style: str) -> None:
        if self._style not in (None, style):
            raise RuntimeError(
                f"GradientAccumulator: a group of micro-batches was fed with {self._style}() "
                f"and then {style}(); use one of them per group"
            )
        self._style = style
        self.pending += 1
        self.stepped = self.pending == self.accumulation_steps

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _scale_grads(self, factor: float) -> None:
        if factor != 1.0:
            for p in self._params():
                if p.grad is not None:
                    p.grad.mul_(factor)

    def backward(self, loss: torch.Tensor, weight: float | None = None) -> bool:
        """Accumulate ``loss``'s gradient; return ``True`` if this call stepped the optimizer."""
        w = 1.0 / self.accumulation_steps if weight is None else float(weight)
        (loss * w).backward()
        self._count("backward")
        if self.stepped:
            self._step_inner()
            self.optimizer.zero_grad()
        return self.stepped

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Count one micro-batch (its gradient already in ``p.grad``); step on the last one.

        With a closure, it is called first (it must call ``backward()``, without
        zeroing the gradients of earlier micro-batches). Returns the closure's loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._count("step")
        if self.stepped:
            self._scale_grads(1.0 / self.pending)
            self._step_inner()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradients, unless micro-batches are pending (their sum is kept)."""
        if self.pending == 0:
            self.optimizer.zero_grad(set_to_none=set_to_none)

    def flush(self) -> bool:
        """Step on a partial group of micro-batches; return ``True`` if there was one.

        After :meth:`backward` the partial sum is rescaled to a mean over the
        micro-batches seen, and the gradients are zeroed after the step; after
        :meth:`step` likewise (the next :meth:`zero_grad` clears them).
        """
        if self.pending == 0:
            return False
        weighted = self._style == "backward"
        self._scale_grads(self.accumulation_steps / self.pending if weighted
                          else 1.0 / self.pending)
        self._step_inner()
        if weighted:
            self.optimizer.zero_grad()
        return True

    def _step_inner(self) -> None:
        if self.clip is not None:
            self.clip(self._params())
        self.optimizer.step()
        self.pending = 0
        self._style = None
        self.optimizer_steps += 1

    def _repr_extra(self) -> str:
        return f", accumulation_steps={self.accumulation_steps}"
