"""The flat engines' per-step check, in one C++ pass: every parameter still in its slot?

Before each step a flat buffer must know that nothing moved since the last
one: every parameter's ``.data`` is still its slot (``p.data = ...`` and
``model.to(...)`` replace it) and every ``.grad`` is still its flat view
(``zero_grad()`` sets ``None``, ``p.grad = ...`` assigns another tensor).
Read from Python that is two attribute reads per parameter, and right after a
step has streamed the buffers through the caches every read misses them: on
2,000 parameters of 1,000 elements the two passes took 0.8-1.2 ms, as long as
the update itself.

:func:`slots_hold` does the same comparisons in one C++ loop over the
parameters (``THPVariable_Unpack``, the tensor's data pointer, its gradient's
``TensorImpl``): the loads of neighbouring parameters overlap, 0.14 ms on the
same 2,000 parameters with cold caches. The loop is a small C++ source built
against the running torch's headers by g++ in the background
(:class:`~descentlab.engine.native.NativeLibrary`, cached under
``~/.cache/descentlab/native`` by a hash of the source, flags, compiler and
torch version); until it is built, or where it cannot be (no g++, no headers,
``DESCENTLAB_NATIVE=0``), the same check runs in Python. Both answer the
same question; neither is ever consulted for anything else.
"""

from __future__ import annotations

import ctypes
import operator
import sys
import sysconfig
from pathlib import Path

import torch
from torch import Tensor

from descentlab.engine.native import BuildSettings, NativeLibrary

__all__ = ["LIBRARY", "expected_keys", "python_check", "slots_hold"]

SOURCE = r"""
#include <Python.h>
#include <torch/csrc/autograd/python_variable.h>
#include <cstdint>

// 1 when, for every i, params[i] is a tensor whose data pointer is data[i] and whose
// gradient's TensorImpl is at grads[i]; else 0. Called with the GIL held (ctypes.PyDLL).
extern "C" int slots_hold(PyObject* params, const int64_t* data, const int64_t* grads) {
  if (!PyList_Check(params)) return 0;
  const Py_ssize_t n = PyList_GET_SIZE(params);
  int ok = 1;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = PyList_GET_ITEM(params, i);
    if (!THPVariable_Check(item)) return 0;
    const at::Tensor& t = THPVariable_Unpack(item);
    c10::TensorImpl* impl = t.unsafeGetTensorImpl();
    // (no early exit: the loads of neighbouring parameters overlap)
    ok &= reinterpret_cast<int64_t>(t.const_data_ptr()) == data[i];
    ok &= reinterpret_cast<int64_t>(impl->grad().unsafeGetTensorImpl()) == grads[i];
  }
  return ok;
}
"""


def _declare(lib: ctypes.CDLL) -> None:
    lib.slots_hold.argtypes = [ctypes.py_object, ctypes.c_void_p, ctypes.c_void_p]
    lib.slots_hold.restype = ctypes.c_int


def _settings() -> BuildSettings:
    """g++ against the running torch (its headers, C++ ABI and libraries) and Python."""
    from torch.utils.cpp_extension import include_paths, library_paths

    abi = int(torch.compiled_with_cxx11_abi())
    includes = [f"-I{p}" for p in [*include_paths(), sysconfig.get_paths()["include"]]]
    libs = library_paths()
    return BuildSettings(
        compiler="g++",
        flags=("-O2", "-shared", "-fPIC", "-std=c++17", "-w", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
               *includes),
        link=(*[f"-L{p}" for p in libs], "-lc10", "-ltorch_cpu", "-ltorch_python",
              *[f"-Wl,-rpath,{p}" for p in libs]),
        suffix=".cpp",
        key=f"torch {torch.__version__} {Path(torch.__file__).parent} python {sys.version}",
        python=True,
    )


LIBRARY = NativeLibrary("slot_check", SOURCE, _declare, build=_settings)

_GRAD = torch._C.TensorBase.grad.__get__


def expected_keys(data_ptrs: list[int], grad_views: list[Tensor | None]) -> Tensor:
    """The values :func:`slots_hold` compares with, as one int64 tensor: the data pointers,
    then the gradient views' ``TensorImpl`` addresses (0 for a slot without a view)."""
    impls = [0 if v is None else v._cdata for v in grad_views]
    return torch.tensor([*data_ptrs, *impls], dtype=torch.int64)


def slots_hold(
    params: list[Tensor], data_ptrs: list[int], grad_views: list[Tensor | None], keys: Tensor
) -> bool:
    """Whether every ``params[i]`` still has data pointer ``data_ptrs[i]`` and ``.grad`` the
    tensor ``grad_views[i]`` (``keys``: :func:`expected_keys` of both).

    One C++ pass once :data:`LIBRARY` is built (never waits for the build), else Python.
    """
    lib = LIBRARY.get()
    if lib is not None:
        start = keys.data_ptr()
        return bool(lib.slots_hold(params, start, start + 8 * len(params)))
    return python_check(params, data_ptrs, grad_views)


def python_check(
    params: list[Tensor], data_ptrs: list[int], grad_views: list[Tensor | None]
) -> bool:
    return list(map(Tensor.data_ptr, params)) == data_ptrs and all(
        map(operator.is_, map(_GRAD, params), grad_views)
    )
