"""The compiled engine: the flat engine with each run updated by one compiled, fused kernel.

Same buffers, state and semantics as :class:`~descentlab.engine.flat.FlatEngine`;
only the arithmetic differs: each run of a buffer is updated by a
:class:`~descentlab.engine.kernels.Kernel`, i.e. ``rule.update`` compiled by
inductor into one loop that reads and writes every buffer once. Kernels are
compiled on first use (seconds with an empty cache, about one second with a
warm one, see :func:`~descentlab.engine.kernels.cache_dir`) and never again in
the process: not when a hyperparameter changes, not when the step grows, not
for another buffer length.

Results match the reference to rounding (the scalar coefficients are computed
in float64 either way; the elementwise arithmetic is the same sequence of
float operations), well within 1e-12 relative in float64 and 1e-6 in float32.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from descentlab.engine.flat import FlatEngine
from descentlab.engine.kernels import Kernel, get_kernel
from descentlab.rules.base import Flags, Rule

__all__ = ["CompiledEngine"]


class CompiledEngine(FlatEngine):
    """Flat buffers updated by compiled kernels (see the module docstring)."""

    name = "compiled"

    def kernel_for(
        self,
        rule: Rule,
        flags: Flags,
        maximize: bool,
        param: Tensor,
        state: dict[str, Tensor],
        scalars: dict[str, Tensor],
        h: dict[str, Any],
    ) -> Kernel:
        """The kernel for this call's structure (not necessarily built yet)."""
        return get_kernel(
            rule, flags, maximize, param.dtype, param.device, tuple(state), tuple(scalars), tuple(h)
        )

    def apply(self, rule, param, grad, state, scalars, h, step, flags, maximize) -> None:
        """Update the run with the compiled kernel, compiling it first if needed."""
        kernel = self.kernel_for(rule, flags, maximize, param, state, scalars, h)
        if not kernel.ready:
            kernel.build()
        kernel(param, grad, state, scalars, h, step)
