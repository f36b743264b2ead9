"""Fused C loops, run on a flat buffer, for elementwise rules torch has no fused kernel for.

Like torch's fused kernels (:mod:`descentlab.engine.torch_fused`), each is one
call per run of the flat engine, with nothing to compile in the process: the
loop is a small C library built by gcc once per machine, in the background at
its first use, and loaded from the cache afterwards
(:class:`~descentlab.engine.native.NativeLibrary`). The default engine
(:mod:`descentlab.engine.auto`) uses one where the rule has it, at every size;
the other engines never do. Unlike torch's kernels, a loop here computes the
eager rule's operations in its order, each correctly rounded, so it agrees
with the eager flat engine to rounding (torch's own CPU square root is not
correctly rounded) and, in float32, with the compiled engine bit for bit.

Which rules have a loop (:data:`NATIVE`, keyed by the exact rule class):

* NAdam (``NAdamRule``): every weight-decay mode, ``maximize``; float32 and
  float64 on the CPU (:mod:`descentlab.rules.nadam_kernel`).

Set ``DESCENTLAB_NATIVE=0`` to keep every native library (these loops among
them) unbuilt.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from descentlab.engine.base import Run
from descentlab.engine.native import NativeLibrary
from descentlab.rules import nadam_kernel
from descentlab.rules.adam import NAdamRule

__all__ = ["NATIVE", "native_call", "native_pending"]

#: rule class → (its library, the call of one run given the loaded library, or None)
NATIVE: dict[type, tuple[NativeLibrary, Callable[..., Callable[[], None] | None]]] = {
    NAdamRule: (nadam_kernel.LIBRARY, nadam_kernel.step_call),
}


def native_pending(run: Run) -> bool:
    """Whether the rule has a loop here whose library is still being built (the engine then
    compiles nothing for it: the loop will take the run, or the compile starts after)."""
    entry = NATIVE.get(type(run.rule))
    return entry is not None and not entry[0].ready and entry[0].error is None


def native_call(
    run: Run, param: Tensor, grad: Tensor, state: dict[str, Tensor], scalars: dict[str, Tensor]
) -> Callable[[], None] | None:
    """The loop's update of a 1-D run (``grad`` as given) as a call without arguments, or
    None: no loop for the rule, its library not loaded (yet), or a run it cannot take."""
    entry = NATIVE.get(type(run.rule))
    if entry is None:
        return None
    lib = entry[0].get()
    return None if lib is None else entry[1](lib, run, param, grad, state, scalars)
