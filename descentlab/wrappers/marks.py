"""Did the gradients (or the parameters) change since a moment? :class:`GradientMarks`.

Some wrappers must know whether ``p.grad`` still holds what it held earlier:

* :class:`~descentlab.wrappers.SAM` takes gradients that changed since its
  last step as the current point's (the caller computed them, as
  ``pytorch_optimizer``'s protocol asks) and evaluates the closure itself
  otherwise;
* :class:`~descentlab.wrappers.NonFiniteGuard` hands its inner optimizer the
  loss of its own closure call only while neither the parameters nor the
  gradients have moved since (an inner SAM perturbs the parameters first).

A mark records, per parameter, the gradient *object* (a weak reference, so a
freed gradient is not kept alive and a replaced one is told apart) and the
version counter of the gradient and, optionally, of the parameter. Every
in-place change advances a version counter (``backward`` accumulating into
``.grad``, ``zero_()``, gradient clipping, an optimizer's update), and
``zero_grad(set_to_none=True)`` followed by ``backward`` makes a new object.
Marks are not copied with the wrapper that holds them (weak references do not
pickle and would point at the original's tensors): a copy takes new marks.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch

__all__ = ["GradientMarks"]


def _mark(p: torch.Tensor, with_values: bool) -> tuple:
    g = p.grad
    grad = None if g is None else (weakref.ref(g), g._version)
    return grad, (p._version if with_values else None)


class GradientMarks:
    """The state of ``params``' gradients (and, with ``with_values``, of the parameters) now.

    :meth:`unchanged` later tells whether all of them are still the same
    tensors at the same versions.
    """

    def __init__(self, params: Iterable[torch.Tensor], *, with_values: bool = False) -> None:
        self.with_values = with_values
        self._marks = {id(p): _mark(p, with_values) for p in params}

    def unchanged(self, params: Iterable[torch.Tensor]) -> bool:
        """``True`` if no gradient of ``params`` (nor, with ``with_values``, value) changed."""
        for p in params:
            old = self._marks.get(id(p))
            now = _mark(p, self.with_values)
            if old is None:
                if now[0] is not None:
                    return False
                continue
            if old[1] != now[1]:
                return False
            if (old[0] is None) != (now[0] is None):
                return False
            if old[0] is not None and (old[0][0]() is not p.grad or old[0][1] != now[0][1]):
                return False
        return True
