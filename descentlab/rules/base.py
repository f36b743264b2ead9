"""The rule interface: one algorithm's state and update, written like its equations.

A :class:`Rule` is the specification of an elementwise optimizer. It says

* which *flags* of a parameter group change the shape of the computation
  (``amsgrad``, ``nesterov``, whether weight decay is on, ...) — structural
  choices, Python values, known before a step;
* which *scalars* (hyperparameters such as ``lr`` and ``beta1``) enter it —
  numbers that may change every step (schedules);
* the per-parameter *state* it keeps (moment buffers), created lazily;
* the *update* itself.

``update`` is written once, with Python operators and in-place tensor methods
that accept either Python floats or 0-dim tensors as scalars, so the same code
runs in every engine: per tensor (the reference engine, scalars as floats),
on one flat buffer per group, or compiled by ``torch.compile`` with the
scalars passed as 0-dim tensors (so a changed learning rate never triggers a
recompilation). Rules never look at ``maximize`` (the engine negates the
gradient first) nor at the step counter's storage (the engine passes the
1-based step number).

Sparse gradients (``nn.Embedding(sparse=True)``) are not elementwise work
on a flat buffer: a rule that takes them sets :attr:`Rule.sparse` and
implements :meth:`Rule.sparse_update`, which every engine runs per tensor,
on the parameter as it is (complex parameters are not viewed as real, as in
torch.optim's sparse paths).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

__all__ = [
    "Rule",
    "Scalar",
    "Flags",
    "weight_decay_mode",
    "apply_weight_decay",
    "where",
    "at_entries",
]

#: A hyperparameter as the update sees it: a Python float or a 0-dim tensor.
Scalar = float | Tensor
#: Structural options of a parameter group (hashable values only).
Flags = Mapping[str, Any]


class Rule:
    """Base class of an elementwise update rule (see the module docstring).

    Subclasses set :attr:`name` and implement :meth:`flags`, :meth:`scalars`,
    :meth:`init_state` and :meth:`update`. :attr:`scalar_state` names state
    entries that are 0-dim bookkeeping values (not elementwise buffers); they
    keep their own dtype when a state dict is loaded.
    """

    name: ClassVar[str] = ""
    scalar_state: ClassVar[tuple[str, ...]] = ()
    #: Whether :meth:`sparse_update` takes sparse (COO) gradients.
    sparse: ClassVar[bool] = False

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        """Structural options read from a parameter group (default: none)."""
        return {}

    def scalars(self, group: Mapping[str, Any]) -> dict[str, float]:
        """Numeric hyperparameters read from a parameter group, as floats."""
        raise NotImplementedError

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        """Fresh state for ``param`` (without the step counter, which the engine keeps)."""
        return {}

    def update(
        self,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        h: Mapping[str, Scalar],
        step: Scalar,
        flags: Flags,
    ) -> None:
        """Apply one step in place to ``param`` and ``state``.

        ``grad`` is the gradient of the objective to *minimise* (already negated
        under ``maximize``); ``step`` is the 1-based step number; ``h`` holds the
        scalars of :meth:`scalars`; ``flags`` those of :meth:`flags`.
        """
        raise NotImplementedError

    def check_sparse(self, flags: Flags) -> None:
        """Raise a RuntimeError if a group with these ``flags`` cannot take a sparse gradient.

        Called before the state is touched; the default refuses unless
        :attr:`sparse` is set. Rules refine it for options torch.optim refuses
        with sparse gradients (weight decay).
        """
        if not self.sparse:
            raise RuntimeError(
                f"{self.name} does not support sparse gradients; use descentlab.SparseAdam "
                "(or SGD, Adagrad) or a dense embedding"
            )

    def check_dense(self) -> None:
        """Raise a RuntimeError if this rule cannot take a dense gradient (default: it can)."""

    def sparse_update(
        self,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        h: Mapping[str, Scalar],
        step: float,
        flags: Flags,
    ) -> None:
        """One step with a sparse COO ``grad`` (already negated under ``maximize``), per tensor."""
        raise NotImplementedError


def weight_decay_mode(group: Mapping[str, Any], decoupled: bool = False) -> str | None:
    """Structural weight-decay flag: ``None`` when off, else ``"coupled"``/``"decoupled"``."""
    if float(group["weight_decay"]) == 0.0:
        return None
    return "decoupled" if decoupled else "coupled"


def apply_weight_decay(
    param: Tensor, grad: Tensor, h: Mapping[str, Scalar], mode: str | None
) -> Tensor:
    """Apply weight decay λ and return the gradient the rule should use.

    * coupled (L2 regularisation, torch's default):  g ← g + λ θ
    * decoupled (Loshchilov & Hutter 2019, AdamW):   θ ← θ (1 − η λ), g unchanged
    """
    if mode == "coupled":
        return grad + h["weight_decay"] * param
    if mode == "decoupled":
        param.mul_(1 - h["lr"] * h["weight_decay"])
    return grad


def where(condition: Any, if_true: Scalar, if_false: Scalar) -> Scalar:
    """``if_true if condition else if_false`` for Python scalars and 0-dim tensors alike."""
    if isinstance(condition, Tensor):
        return torch.where(condition, if_true, if_false)
    return if_true if condition else if_false


def at_entries(grad: Tensor, values: Tensor) -> Tensor:
    """A sparse tensor with ``values`` at the entries of the coalesced sparse ``grad``."""
    return torch.sparse_coo_tensor(grad._indices(), values, grad.shape, check_invariants=False)
