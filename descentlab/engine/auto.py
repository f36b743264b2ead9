"""The default engine: flat buffers at once, compiled kernels once they are ready.

``engine="auto"`` must never make a fresh process wait for a compiler (the
first step may not become more than a second slower), yet should reach the
compiled engine's speed on large models. It therefore

* runs torch's own fused kernel on the flat buffer where torch has one for
  the rule (Adam/AdamW, SGD, Adagrad: :mod:`descentlab.engine.torch_fused`),
  at every size and from the first step: nothing to compile, one call per run;
* runs a native C loop on the flat buffer where the rule has one and torch
  has none (NAdam: :mod:`descentlab.engine.native_fused`), at every size, from
  the step its small library is loaded (the first one when gcc built it in an
  earlier process; until then, eager steps and no compile);
* otherwise steps eagerly on flat buffers (:class:`~descentlab.engine.flat.FlatEngine`)
  from the first step, which costs no compilation;
* for a run of at least :data:`COMPILE_THRESHOLD` (2^16) elements, starts compiling
  its kernel in a background thread (about a second with a warm cache, several
  to tens of seconds with a cold one) and switches to the compiled kernel at
  the first step after it is ready;
* never compiles for smaller runs: a compiled call costs about 30-40 µs
  more than its loop (the scalar part as one generated Python function, the
  coefficients written into a host array, inductor's call wrapper), which a
  run of 2^16 elements repays with the eager flat step's separate passes
  (several tenths of a millisecond for RAdam at 10^5 elements), and compiling
  costs seconds of CPU;
* leaves code in other threads alone while it compiles: the kernel goes
  straight to inductor without dynamo
  (:func:`~descentlab.engine.kernels.compile_elementwise`), so
  ``torch.compiler.is_compiling()`` stays False (torch.optim optimizers
  stepping meanwhile keep their eager code paths) and the global random
  generator is neither drawn from nor rewound;
* stays eager for good if compiling fails (no C++ compiler, an unsupported
  device), warning once.

Set ``DESCENTLAB_AUTO_COMPILE=0`` to never compile (e.g. in short test runs),
``DESCENTLAB_TORCH_FUSED=0`` to never use torch's fused kernels,
``DESCENTLAB_NATIVE=0`` to build no C library (the native loops among them).
A process that ends while a background compile runs exits cleanly without
finishing it. Switching from the eager to the compiled update or to a native
loop changes results only by rounding (either may round differently in the
last bit; see :mod:`descentlab.engine.native_fused`); torch's fused kernels
give torch's ``fused=True`` results (to rounding in each parameter's last few
elements, see :mod:`descentlab.engine.torch_fused`).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable

from torch import Tensor

from descentlab.engine.base import Run
from descentlab.engine.compiled import CompiledEngine, bound
from descentlab.engine.flat import FlatEngine, State
from descentlab.engine.native_fused import native_call, native_pending
from descentlab.engine.torch_fused import fused_update, has_fused

__all__ = ["AutoEngine", "COMPILE_THRESHOLD"]

#: Smallest run (in elements) worth compiling a kernel for.
COMPILE_THRESHOLD = 1 << 16


class AutoEngine(CompiledEngine):
    """Eager flat steps until a background-compiled kernel is ready (see the module docstring)."""

    name = "auto"

    def __init__(self) -> None:
        super().__init__()
        self.compile_enabled = os.environ.get("DESCENTLAB_AUTO_COMPILE", "1") != "0"
        self.torch_fused_enabled = os.environ.get("DESCENTLAB_TORCH_FUSED", "1") != "0"
        self._warned = False

    def kernel_call(self, run: Run, param: Tensor, grad: Tensor, state: State,
                    scalars: State) -> Callable[[], None] | None:
        """torch's fused kernel if it has one, else a native loop if the rule has one and it is
        loaded, else the compiled kernel if it is ready (each gives the same bits on any thread
        count); None while the update is eager."""
        if self.torch_fused_enabled and not scalars and has_fused(run, param):
            return functools.partial(fused_update, run, param, grad, state)
        native = native_call(run, param, grad, state, scalars)
        if native is not None:
            return native
        if not self.compile_enabled:
            return None
        kernel = self.kernel_for(run, param, state, scalars)
        return bound(kernel, run, param, grad, state, scalars) if kernel.ready else None

    def apply(self, run: Run, param: Tensor, grad: Tensor, state: State, scalars: State) -> None:
        """torch's fused kernel if it has one; else compiled if ready; else eager, then compile."""
        call = self.kernel_call(run, param, grad, state, scalars)
        if call is not None:
            call()
            return
        FlatEngine.apply(self, run, param, grad, state, scalars)
        if not self.compile_enabled or native_pending(run):
            return  # the native loop being built will likely take the run
        kernel = self.kernel_for(run, param, state, scalars)
        if kernel.error is not None:
            if not self._warned:
                warnings.warn(
                    f"descentlab: compiling the {run.rule.name} kernel failed "
                    f"({kernel.error!r}); engine='auto' keeps the eager flat engine",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._warned = True
        elif param.numel() >= COMPILE_THRESHOLD:
            kernel.build_in_background()  # after the eager step, so that step never waits
