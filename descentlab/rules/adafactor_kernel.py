"""Adafactor's factored step in three passes over a stack: a small C library (OpenMP).

Eager torch makes seven passes over a stack ``[B, ..., m, n]`` of matrices
for the factored step (see :mod:`descentlab.rules.adafactor`). These
functions make three, each one parallel region over the whole stack:

1. :func:`sums` reads G once for Σⱼ G²ᵢⱼ of each row and Σᵢ G²ᵢⱼ of each
   column. The column sums are made per block of :data:`BLOCK` rows, then
   the blocks of a matrix are added in order, so the sums do not depend on
   the thread count or on which tensors are stacked together;
2. and 3. :func:`descend` reads G and θ for ‖U‖² = Σᵢ aᵢ² Σⱼ (Gᵢⱼ bⱼ)² and
   ‖θ‖² of each tensor (the row sums of U² in the dtype, of θ² in float64,
   and their sums over the rows in float64, in row order), takes
   α = max(ε₂, RMS(θ))·ρ and s = α / max(1, RMS(U)/d), and then reads θ and G
   again to write θ ← θ·decay − (Gᵢⱼ bⱼ)(aᵢ s). A thread makes both passes
   over the same rows, so the second finds them in its own cache: whole
   tensors per thread when the stack divides evenly among the threads (or
   has at least eight tensors per thread), else the rows of each tensor
   split among the threads with one barrier per tensor. When a thread's share
   of θ and G is larger than :data:`CACHED` (¾ of a core's L2), ‖θ‖² is taken
   in pass 1 instead, beside the sums of G², so that pass 2 reads G alone and
   G at least stays in the cache until pass 3. Every schedule gives the same
   bits.

So a stack of tensors that fit moves four times its size through memory
(G twice, θ read and written once), against eleven for the eager passes.
The O(m + n) statistics between the passes (the lerps of R and C, mean(R),
the clamp check, a = (R/mean(R))^-½, b = C^-½) stay in torch, as do the
unfactored and clamped paths. Float32 and float64; every tensor of the stack
contiguous (the stack itself may have any batch stride); the CPU.

The rule asks :func:`stack` for its stack in the library's terms, and gets
None while the library is not ready: it is built by gcc in the background at
the first call (:class:`~descentlab.engine.native.NativeLibrary`), and the
rule takes its eager path until then, or for good if it cannot be built.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from string import Template

import torch
from torch import Tensor
from torch.autograd.graph import increment_version

from descentlab.engine.native import NativeLibrary

__all__ = ["BLOCK", "CACHED", "FUSED_MIN", "GRAIN", "LIBRARY", "Stack", "descend", "stack", "sums"]

#: Rows per block of the column sums (the blocks' partial sums are 1/BLOCK of a matrix).
BLOCK = 32
#: Elements per thread at least (torch's grain size for its own parallel loops): a smaller
#: stack runs on fewer threads, rather than waiting for a second one in every call.
GRAIN = 1 << 15


def _l2_bytes(default: int = 1 << 20) -> int:
    """The size of a core's level-2 cache (Linux sysfs), or ``default``."""
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for index in root.glob("index*"):
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip().upper()
                scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
                return int(size.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return default


#: Bytes of θ and G a thread may hold from pass 2 to pass 3 and still find in its cache (¾ of
#: a core's L2): up to this, ‖θ‖² is taken in pass 2 (θ read once from memory), else in pass 1.
CACHED = 3 * _l2_bytes() // 4
#: Smallest stack (elements) stepped by the library: smaller ones are a few dozen small torch
#: calls either way, and keep their eager bits whenever the library becomes ready.
FUSED_MIN = 1 << 16

_TEMPLATE = Template(r"""
/* $T is the element type, $S the suffix of the exported names. Rows are numbered across
   the matrices of a tensor (row i of a tensor is row i % m of its matrix i / m). */

/* Σⱼ θᵢⱼ² of one row, in float64 (the same function wherever it is taken). */
static double theta_row_$S(const $T *p, int64_t n) {
    double sq = 0;
    #pragma omp simd reduction(+:sq)
    for (int64_t j = 0; j < n; j++) sq += (double)p[j] * p[j];
    return sq;
}

/* Rows r0 … r1−1 of a matrix: Σⱼ G²ᵢⱼ per row into rows, the columns' Σ G²ᵢⱼ into acc, and
   (theta_rows not NULL) each row's Σⱼ θᵢⱼ². */
static void block_sums_$S(const $T *p, const $T *g, int64_t count, int64_t n, $T *acc,
                          $T *rows, double *theta_rows) {
    for (int64_t j = 0; j < n; j++) acc[j] = 0;
    for (int64_t i = 0; i < count; i++, p += n, g += n) {
        $T row = 0;
        #pragma omp simd reduction(+:row)
        for (int64_t j = 0; j < n; j++) {
            $T x = g[j] * g[j];
            acc[j] += x;
            row += x;
        }
        rows[i] = row;
        if (theta_rows) theta_rows[i] = theta_row_$S(p, n);
    }
}

/* Pass 1: row and column sums of G², and (theta_rows not NULL) the rows' Σ θ². */
void adafactor_sums_$S(const $T *theta, int64_t theta_stride, const $T *grad,
                       int64_t grad_stride, int64_t tensors, int64_t mats, int64_t m,
                       int64_t n, int64_t block, $T *row_sums, $T *col_sums, $T *partial,
                       double *theta_rows, int threads) {
    int64_t blocks = (m + block - 1) / block, units = tensors * mats * blocks;
    int64_t matrices = tensors * mats;
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        for (int64_t u = units * t / nt; u < units * (t + 1) / nt; u++) {
            int64_t mat = u / blocks, r0 = (u % blocks) * block;
            int64_t r1 = r0 + block < m ? r0 + block : m;
            int64_t tensor = mat / mats, offset = ((mat % mats) * m + r0) * n;
            block_sums_$S(theta + tensor * theta_stride + offset,
                          grad + tensor * grad_stride + offset, r1 - r0, n, partial + u * n,
                          row_sums + mat * m + r0,
                          theta_rows ? theta_rows + mat * m + r0 : 0);
        }
        #pragma omp barrier
        /* each matrix's columns: its blocks added in order */
        int64_t c = matrices * n * t / nt, c1 = matrices * n * (t + 1) / nt;
        while (c < c1) {
            int64_t mat = c / n, j0 = c % n, j1 = j0 + (c1 - c) < n ? j0 + (c1 - c) : n;
            const $T *src = partial + mat * blocks * n;
            $T *out = col_sums + mat * n;
            for (int64_t j = j0; j < j1; j++) out[j] = src[j];
            for (int64_t k = 1; k < blocks; k++) {
                const $T *next = src + k * n;
                #pragma omp simd
                for (int64_t j = j0; j < j1; j++) out[j] += next[j];
            }
            c += j1 - j0;
        }
    }
}

/* Rows r0 … r1−1 of one tensor: Σⱼ (Gᵢⱼ bⱼ)² into sq, and (theta_here) Σⱼ θᵢⱼ² into
   theta_rows. */
static void scaled_rows_$S(const $T *p, const $T *g, const $T *b, int64_t r0, int64_t r1,
                           int64_t m, int64_t n, $T *sq, double *theta_rows, int theta_here) {
    for (int64_t i = r0; i < r1; i++) {
        const $T *gi = g + i * n, *bi = b + (i / m) * n;
        $T s = 0;
        #pragma omp simd reduction(+:s)
        for (int64_t j = 0; j < n; j++) {
            $T x = gi[j] * bi[j];
            s += x * x;
        }
        sq[i] = s;
        if (theta_here) theta_rows[i] = theta_row_$S(p + i * n, n);
    }
}

/* s = α / max(1, RMS(U)/d) of one tensor: α = max(ε₂, RMS(θ))·ρ, ‖θ‖² the sum of its rows',
   ‖U‖² = Σᵢ aᵢ² Σⱼ (Gᵢⱼ bⱼ)², both in float64 and in row order. */
static $T tensor_scale_$S(const $T *a, const $T *sq, const double *theta_rows, int64_t rows,
                          int64_t n, double eps2, double rho, double d) {
    double u = 0, theta = 0;
    for (int64_t i = 0; i < rows; i++) {
        u += (double)a[i] * a[i] * sq[i];
        theta += theta_rows[i];
    }
    double root = sqrt((double)(rows * n)), rms = sqrt(theta) / root;
    double alpha = (rms > eps2 ? rms : eps2) * rho, clip = sqrt(u) / (root * d);
    return ($T)(alpha / (clip > 1.0 ? clip : 1.0));
}

/* θ ← θ·decay − (Gᵢⱼ bⱼ)(aᵢ s) on rows r0 … r1−1 of one tensor. */
static void descend_rows_$S($T *p, const $T *g, const $T *a, const $T *b, $T s, $T decay,
                            int64_t r0, int64_t r1, int64_t m, int64_t n) {
    for (int64_t i = r0; i < r1; i++) {
        $T *pi = p + i * n;
        const $T *gi = g + i * n, *bi = b + (i / m) * n;
        $T r = a[i] * s;
        #pragma omp simd
        for (int64_t j = 0; j < n; j++) pi[j] = pi[j] * decay - gi[j] * bi[j] * r;
    }
}

/* Passes 2 and 3: whole tensors per thread (whole), or each tensor's rows split among the
   threads with one barrier per tensor; the rows' Σ θ² taken here (theta_here) or by pass 1. */
void adafactor_descend_$S($T *theta, int64_t theta_stride, const $T *grad,
                          int64_t grad_stride, int64_t tensors, int64_t mats, int64_t m,
                          int64_t n, const $T *a, const $T *b, double eps2, double rho,
                          double d, double decay, $T *sq, double *theta_rows, int theta_here,
                          int whole, int threads) {
    int64_t rows = mats * m;
    $T dec = ($T)decay;
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t k0 = whole ? tensors * t / nt : 0, k1 = whole ? tensors * (t + 1) / nt : tensors;
        int64_t r0 = whole ? 0 : rows * t / nt, r1 = whole ? rows : rows * (t + 1) / nt;
        for (int64_t k = k0; k < k1; k++) {
            $T *p = theta + k * theta_stride;
            const $T *g = grad + k * grad_stride, *ak = a + k * rows, *bk = b + k * mats * n;
            $T *sqk = sq + k * rows;
            double *thk = theta_rows + k * rows;
            scaled_rows_$S(p, g, bk, r0, r1, m, n, sqk, thk, theta_here);
            if (!whole) {
                #pragma omp barrier
            }
            $T s = tensor_scale_$S(ak, sqk, thk, rows, n, eps2, rho, d);
            descend_rows_$S(p, g, ak, bk, s, dec, r0, r1, m, n);
        }
    }
}
""")


SOURCE = "#include <math.h>\n#include <stdint.h>\n#include <omp.h>\n" + "".join(
    _TEMPLATE.substitute(T=t, S=s) for t, s in (("float", "f32"), ("double", "f64")))

_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_P, _I, _D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double


def _declare(lib: ctypes.CDLL) -> None:
    for s in _SUFFIX.values():
        f = getattr(lib, f"adafactor_sums_{s}")
        f.argtypes = [_P, _I, _P, _I, _I, _I, _I, _I, _I, _P, _P, _P, _P, ctypes.c_int]
        f.restype = None
        f = getattr(lib, f"adafactor_descend_{s}")
        f.argtypes = [_P, _I, _P, _I, _I, _I, _I, _I, _P, _P, _D, _D, _D, _D, _P, _P,
                      ctypes.c_int, ctypes.c_int, ctypes.c_int]
        f.restype = None


#: The library (built in the background at its first use).
LIBRARY = NativeLibrary("adafactor", SOURCE, _declare)


def _batch_stride(t: Tensor) -> int | None:
    """The batch stride of a stack ``[B, ...]`` whose tensors are each contiguous, else None."""
    shape, strides = t.shape, t.stride()
    expected = 1
    for k in range(t.dim() - 1, 0, -1):
        if shape[k] != 1 and strides[k] != expected:
            return None
        expected *= shape[k]
    if shape[0] == 1:
        return expected
    return strides[0] if strides[0] >= expected else None


class Stack:
    """A stack ``[B, ..., m, n]`` of parameters and its gradients as the library takes them,
    with the schedule of its passes (see the module docstring): ``threads``, ``whole``
    (whole tensors per thread) and ``theta_here`` (‖θ‖² taken in pass 2, when a thread's
    share of θ and G stays in its cache until pass 3; else in pass 1)."""

    __slots__ = ("lib", "param", "grad", "args", "tensors", "mats", "m", "n", "suffix",
                 "threads", "whole", "theta_here", "theta_rows")

    def __init__(self, lib: ctypes.CDLL, param: Tensor, grad: Tensor, strides: tuple[int, int]):
        self.lib, self.param, self.grad = lib, param, grad
        self.m, self.n = param.shape[-2], param.shape[-1]
        self.tensors = param.shape[0]
        self.mats = param[0].numel() // (self.m * self.n)
        self.suffix = _SUFFIX[param.dtype]
        threads = self.threads = max(1, min(torch.get_num_threads(), param.numel() // GRAIN))
        self.whole = self.tensors % threads == 0 or self.tensors >= 8 * threads
        share = 2 * param[0].numel() * param.element_size() // (1 if self.whole else threads)
        self.theta_here = share <= CACHED
        self.theta_rows = param.new_empty(self.tensors * self.mats * self.m, dtype=torch.float64)
        self.args = (param.data_ptr(), strides[0], grad.data_ptr(), strides[1],
                     self.tensors, self.mats, self.m, self.n)


def stack(param: Tensor, grad: Tensor) -> Stack | None:
    """The stack for the library, if the library is ready and can step it (float32 or float64
    on the CPU, each tensor contiguous, at least :data:`FUSED_MIN` elements); else None
    (starting the build if the stack qualifies)."""
    if (param.numel() < FUSED_MIN or param.dim() < 3 or param.device.type != "cpu"
            or param.dtype not in _SUFFIX or grad.dtype != param.dtype):
        return None
    strides = _batch_stride(param), _batch_stride(grad)
    if strides[0] is None or strides[1] is None:
        return None
    lib = LIBRARY.get()
    return None if lib is None else Stack(lib, param, grad, strides)


def sums(s: Stack) -> tuple[Tensor, Tensor]:
    """Pass 1: (Σⱼ G²ᵢⱼ [B, ..., m, 1], Σᵢ G²ᵢⱼ [B, ..., 1, n]), and each row's Σⱼ θᵢⱼ²
    unless pass 2 takes it."""
    param = s.param
    rows, cols = list(param.shape), list(param.shape)
    rows[-1], cols[-2] = 1, 1
    row_sums, col_sums = param.new_empty(rows), param.new_empty(cols)
    partial = param.new_empty(s.tensors * s.mats * -(-s.m // BLOCK) * s.n)
    getattr(s.lib, f"adafactor_sums_{s.suffix}")(
        *s.args, BLOCK, row_sums.data_ptr(), col_sums.data_ptr(), partial.data_ptr(),
        None if s.theta_here else s.theta_rows.data_ptr(), s.threads)
    return row_sums, col_sums


def descend(s: Stack, rows: Tensor, cols: Tensor, eps2: float, rho: float, d: float,
            decay: float) -> None:
    """Passes 2 and 3: θ ← θ·decay − s·diag(a) G diag(b) per tensor, a = ``rows``
    ([B, ..., m, 1]), b = ``cols`` ([B, ..., 1, n]), s = α / max(1, RMS(U)/d) and
    α = max(ε₂, RMS(θ))·ρ (θ before the step)."""
    rows, cols = rows.contiguous(), cols.contiguous()
    sq = s.param.new_empty(s.tensors * s.mats * s.m)
    getattr(s.lib, f"adafactor_descend_{s.suffix}")(
        *s.args, rows.data_ptr(), cols.data_ptr(), eps2, rho, d, decay, sq.data_ptr(),
        s.theta_rows.data_ptr(), s.theta_here, s.whole, s.threads)
    increment_version(s.param)
