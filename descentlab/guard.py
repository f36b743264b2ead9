"""Skip optimizer steps whose gradients are not finite (see :mod:`descentlab.wrappers.guard`).

Kept so that ``from descentlab.guard import NonFiniteGuard`` keeps working.
"""

from descentlab.wrappers.guard import NonFiniteGuard, grads_are_finite

__all__ = ["NonFiniteGuard", "grads_are_finite"]
