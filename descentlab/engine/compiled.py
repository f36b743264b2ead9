"""The compiled engine: the flat engine with each run updated by one compiled, fused kernel.

Same buffers, state and semantics as :class:`~descentlab.engine.flat.FlatEngine`;
only the arithmetic differs: each run of a buffer is updated by a
:class:`~descentlab.engine.kernels.Kernel`, i.e. ``rule.update`` compiled by
inductor into one loop that reads and writes every buffer once. Kernels are
compiled on first use (seconds with an empty cache, about one second with a
warm one, see :func:`~descentlab.engine.kernels.cache_dir`) and never again in
the process: not when a hyperparameter changes, not when the step grows, not
for another buffer length.

Only elementwise rules are compiled: a tensor rule's group is stepped as in
the flat engine (whole parameters, eagerly), and :func:`get_kernel` refuses
a tensor rule.

Results match the reference to rounding (the scalar coefficients are computed
in float64 either way; the elementwise arithmetic is the same sequence of
float operations), well within 1e-12 relative in float64 and 1e-6 in float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import Tensor

from descentlab.engine.base import Run
from descentlab.engine.flat import FlatEngine, State
from descentlab.engine.kernels import Kernel, get_kernel

__all__ = ["CompiledEngine", "bound"]


def bound(kernel: Kernel, run: Run, param: Tensor, grad: Tensor, state: State,
          scalars: State) -> Callable[[], None]:
    """``kernel``'s update of one run, as a call without arguments."""
    return functools.partial(kernel, param, grad, state, scalars, run.h, run.step)


class CompiledEngine(FlatEngine):
    """Flat buffers updated by compiled kernels (see the module docstring)."""

    name = "compiled"

    def kernel_for(
        self, run: Run, param: Tensor, state: dict[str, Tensor], scalars: dict[str, Tensor]
    ) -> Kernel:
        """The kernel for this call's structure (not necessarily built yet)."""
        return get_kernel(run, param, state, scalars)

    def kernel_call(self, run: Run, param: Tensor, grad: Tensor, state: State,
                    scalars: State) -> Callable[[], None]:
        """The compiled kernel's update of the run (compiled first if needed); its bits do
        not depend on the thread count (each element is computed alone, the same way)."""
        kernel = self.kernel_for(run, param, state, scalars)
        if not kernel.ready:
            kernel.build()
        return bound(kernel, run, param, grad, state, scalars)

    def apply(self, run: Run, param: Tensor, grad: Tensor, state: State, scalars: State) -> None:
        """Update the run with the compiled kernel, compiling it first if needed."""
        self.kernel_call(run, param, grad, state, scalars)()
