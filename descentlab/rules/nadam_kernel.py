"""NAdam's elementwise step as one C loop (OpenMP), in the eager rule's order of operations.

torch has no fused NAdam kernel. The loop inductor compiles for
:class:`~descentlab.rules.adam.NAdamRule` is as fast as this one when its C
function is called alone (1.07 ms on 2,000 × 1,000 float32 parameters right
after another optimizer's step), but reaching it from Python is not: the
generated scalar program, the generated ``call`` with its size checks and,
before :func:`~descentlab.engine.kernels.direct_call`, AOTAutograd's wrapper
each run on code and data the other step evicted. Measured as the update
of the whole buffer after a fused-Adam step (``benchmarks/step_breakdown.py``),
this loop takes 1.01-1.10 ms, the compiled kernel 1.19-1.34 ms (before the
direct call: 1.22), torch's fused Adam kernel on the same bytes 0.96-1.05.

The loop computes, per element and in the parameter's dtype, the operations
of the eager rule in their order (no contraction into fused multiply-adds:
``-ffp-contract=off``), each correctly rounded:

    g ← −g (maximize);  g ← g + θλ (coupled decay)  or  θ ← θ·(1 − ηλ) (decoupled)
    m ← m + (g − m)(1 − β₁);  v ← v·β₂ + g·g·(1 − β₂)
    d ← √(v / (1 − β₂ᵗ)) + ε
    θ ← θ − (g / d · c_g + m / d · c_m)

with μₜ = β₁(1 − ½·0.96^(tψ)), the product Πμ kept in float64 as the
rule's scalar state, and the coefficients c_g = η(1 − μₜ)/(1 − Πμ) and
c_m = ημₜ₊₁/(1 − Πμ·μₜ₊₁) computed in float64 on the host as the rule's
0-dim tensor arithmetic does (``x / tensor`` is ``tensor.reciprocal() * x``
in torch), then rounded to the dtype. The results are the eager flat
engine's to rounding, not bit for bit, because torch's CPU ``sqrt`` is not
correctly rounded: one unit in the last place off for about 20% of float32
and 1.4% of float64 inputs on this build (MKL); in float32 they match the
compiled engine's bits (its loop makes the same operations; in float64 the
compiled engine's host arithmetic divides where torch multiplies by the
reciprocal). Float32 and float64 on the CPU, contiguous 1-D runs with state
of the parameter's dtype.

The library is built by gcc in the background at the first call
(:class:`~descentlab.engine.native.NativeLibrary`); until it is ready, and
for good if it cannot be built, :func:`step_call` gives None and the engine
keeps its other paths.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from string import Template
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.autograd.graph import increment_version

from descentlab.engine.host_scalars import HostScalars
from descentlab.engine.kernels import PARALLEL_MIN  # shorter runs step on one thread, as there
from descentlab.engine.native import COMPILER, FLAGS, BuildSettings, NativeLibrary

if TYPE_CHECKING:
    from descentlab.engine.base import Run

__all__ = ["LIBRARY", "PARALLEL_MIN", "coefficients", "step_call"]


#: weight decay modes as the loop takes them
_MODES = {None: 0, "coupled": 1, "decoupled": 2}

_TEMPLATE = Template(r"""
static inline void nadam_body_$S($T *restrict p, const $T *restrict g, $T *restrict m,
                                 $T *restrict v, int64_t n, const int mode, const int maximize,
                                 const $T *c, int threads) {
  const $T wd = c[0], decay = c[1], c1 = c[2], beta2 = c[3], c2 = c[4], bias2 = c[5],
           eps = c[6], cg = c[7], cm = c[8];
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; i++) {
    $T gi = maximize ? -g[i] : g[i];
    $T pi = p[i];
    if (mode == 1) gi = gi + pi * wd;
    if (mode == 2) pi = pi * decay;
    $T mi = m[i];
    mi = mi + (gi - mi) * c1;
    $T vi = v[i] * beta2 + gi * gi * c2;
    $T d = sqrt$F(vi / bias2) + eps;
    p[i] = pi - (gi / d * cg + mi / d * cm);
    m[i] = mi;
    v[i] = vi;
  }
}

void nadam_step_$S($T *p, const $T *g, $T *m, $T *v, int64_t n, int mode, int maximize,
                   const double *coefficients, int threads) {
  $T c[9];
  for (int k = 0; k < 9; k++) c[k] = ($T)coefficients[k];
  /* one specialised loop per (mode, maximize): the branches leave the loop */
  switch (3 * maximize + mode) {
    case 0: nadam_body_$S(p, g, m, v, n, 0, 0, c, threads); break;
    case 1: nadam_body_$S(p, g, m, v, n, 1, 0, c, threads); break;
    case 2: nadam_body_$S(p, g, m, v, n, 2, 0, c, threads); break;
    case 3: nadam_body_$S(p, g, m, v, n, 0, 1, c, threads); break;
    case 4: nadam_body_$S(p, g, m, v, n, 1, 1, c, threads); break;
    default: nadam_body_$S(p, g, m, v, n, 2, 1, c, threads); break;
  }
}
""")

SOURCE = "#include <math.h>\n#include <stdint.h>\n#include <omp.h>\n" + "".join(
    _TEMPLATE.substitute(T=t, S=s, F=f) for t, s, f in (("float", "f32", "f"),
                                                        ("double", "f64", "")))

_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def _declare(lib: ctypes.CDLL) -> None:
    for s in _SUFFIX.values():
        f = getattr(lib, f"nadam_step_{s}")
        f.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64, ctypes.c_int, ctypes.c_int,
                                              ctypes.POINTER(ctypes.c_double), ctypes.c_int]
        f.restype = None


def _settings() -> BuildSettings:
    """The library flags plus ``-fno-math-errno``: ``sqrt`` then compiles to the vector
    instruction (correctly rounded either way; only errno on a negative input is lost)."""
    return BuildSettings(compiler=COMPILER, flags=(*FLAGS, "-fno-math-errno"))


#: The library (built in the background at its first use).
LIBRARY = NativeLibrary("nadam", SOURCE, _declare, build=_settings)


def coefficients(h: Mapping[str, float], step: int, mu_product: float) -> tuple[list[float], float]:
    """The loop's nine coefficients for step ``step`` and the new Πμ, from the previous Πμ.

    Float64 arithmetic in the order of :meth:`NAdamRule.step_direction` on its 0-dim
    float64 state (a Python float over a tensor is the tensor's reciprocal times the
    float there). May raise :class:`ArithmeticError` where Python refuses what torch
    computes (the caller then takes the eager path).
    """
    t = float(step)
    beta1, beta2, psi = h["beta1"], h["beta2"], h["momentum_decay"]
    lr, wd = h["lr"], h["weight_decay"]
    mu = beta1 * (1 - 0.5 * 0.96 ** (t * psi))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
    product = mu_product * mu
    grad_coef = (1.0 / (1 - product)) * (lr * (1 - mu))
    moment_coef = (1.0 / (1 - product * mu_next)) * (lr * mu_next)
    values = [wd, 1 - lr * wd, 1 - beta1, beta2, 1 - beta2, 1 - beta2**t, h["eps"],
              grad_coef, moment_coef]
    return values, product


def step_call(
    lib: ctypes.CDLL, run: Run, param: Tensor, grad: Tensor, state: Mapping[str, Tensor],
    scalars: Mapping[str, Tensor],
) -> Callable[[], None] | None:
    """The loop's update of one 1-D run (``grad`` as given: the loop negates it under
    ``maximize``), as a call without arguments, or None where it cannot take the run
    (dtype, device, layout, or coefficients Python cannot compute)."""
    suffix = _SUFFIX.get(param.dtype)
    m, v = state.get("exp_avg"), state.get("exp_avg_sq")
    if (suffix is None or param.device.type != "cpu" or m is None or v is None
            or "mu_product" not in scalars
            or any(t.dtype != param.dtype or not t.is_contiguous() or t.device != param.device
                   for t in (param, grad, m, v))):
        return None
    host = scalars if isinstance(scalars, HostScalars) else None
    before = host.value("mu_product") if host is not None else float(scalars["mu_product"])
    try:
        values, product = coefficients(run.h, run.step, before)
    except ArithmeticError:
        return None
    mode = _MODES[run.flags["weight_decay"]]
    kernel = getattr(lib, f"nadam_step_{suffix}")
    n = param.numel()
    held = (ctypes.c_double * len(values))(*values)

    def call() -> None:
        threads = 1 if n < PARALLEL_MIN else torch.get_num_threads()
        kernel(param.data_ptr(), grad.data_ptr(), m.data_ptr(), v.data_ptr(), n, mode,
               int(run.maximize), held, threads)
        increment_version((param, m, v))
        if host is not None:
            host.set("mu_product", product)
        else:
            scalars["mu_product"].fill_(product)

    return call
