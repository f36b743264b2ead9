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
``TensorImpl``), prefetching the objects of the parameters 8, 16 and 24
places ahead, so that the misses of several parameters overlap: on 2,000
parameters with cold caches (after 64 MB were streamed) 0.19 ms against
0.28 ms for the same loop without prefetching (AMD EPYC, medians of 60) and
over 1 ms in Python. :func:`same_items` compares two lists' item arrays
(the group's list against the one it was laid out from) without touching
the objects, :func:`count_step` adds one to a bucket's step counters
without a torch op, and :func:`bump_versions` counts a step's update in the
parameters' version counters, as torch's in-place ops do. The loops are a
small C++ source built against the running torch's headers by g++ in the
background
(:class:`~descentlab.engine.native.NativeLibrary`, cached under
``~/.cache/descentlab/native`` by a hash of the source, flags, compiler and
torch version); until it is built, or where it cannot be (no g++, no headers,
``DESCENTLAB_NATIVE=0``), the same checks run in Python. Both answer the
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
from torch.autograd.graph import increment_version

from descentlab.engine.native import BuildSettings, NativeLibrary

__all__ = ["LIBRARY", "bump_versions", "count_step", "expected_keys", "python_check",
           "same_items", "slots_hold"]

SOURCE = r"""
#include <Python.h>
#include <torch/csrc/autograd/python_variable.h>
#include <cstdint>
#include <cstring>

// Each parameter's answer sits at the end of a chain of dependent loads (the Python object,
// its TensorImpl, the StorageImpl and the AutogradMeta), each a cache miss right after a
// step. The loop walks the chain for later parameters ahead of the compared one, one link
// per stage, so that the misses of several parameters are in flight at once.
static constexpr Py_ssize_t kAhead = 8;  // parameters between two stages

static inline void fetch(const void* p, int lines) {
  const char* c = static_cast<const char*>(p);
  for (int k = 0; k < lines; ++k) __builtin_prefetch(c + 64 * k);
}

static inline c10::TensorImpl* impl_of(PyObject* item) {
  return THPVariable_Check(item) ? THPVariable_Unpack(item).unsafeGetTensorImpl() : nullptr;
}

// The version counter a TensorImpl points to (c10::VariableVersion holds one intrusive_ptr).
static_assert(sizeof(c10::VariableVersion) == sizeof(void*), "VariableVersion layout");
static inline const void* counter_of(c10::TensorImpl* impl) {
  return *reinterpret_cast<void* const*>(&impl->version_counter());
}

// 1 when, for every i, params[i] is a tensor whose data pointer is data[i] and whose
// gradient's TensorImpl is at grads[i]; else 0. Called with the GIL held (ctypes.PyDLL).
extern "C" int slots_hold(PyObject* params, const int64_t* data, const int64_t* grads) {
  if (!PyList_Check(params)) return 0;
  const Py_ssize_t n = PyList_GET_SIZE(params);
  PyObject** items = PySequence_Fast_ITEMS(params);
  int ok = 1;
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (i + 3 * kAhead < n) fetch(items[i + 3 * kAhead], 1);  // the Python object
    if (i + 2 * kAhead < n) {  // its TensorImpl
      if (c10::TensorImpl* far = impl_of(items[i + 2 * kAhead])) fetch(far, 2);
    }
    if (i + kAhead < n) {  // its storage, autograd metadata and version counter
      if (c10::TensorImpl* near = impl_of(items[i + kAhead])) {
        fetch(near->unsafe_storage().unsafeGetStorageImpl(), 2);
        fetch(near->autograd_meta(), 2);
        if (!near->is_inference()) fetch(counter_of(near), 1);  // for bump_versions next
      }
    }
    PyObject* item = items[i];
    if (!THPVariable_Check(item)) return 0;
    const at::Tensor& t = THPVariable_Unpack(item);
    c10::TensorImpl* impl = t.unsafeGetTensorImpl();
    // (no early exit: the loads of neighbouring parameters overlap)
    ok &= reinterpret_cast<int64_t>(t.const_data_ptr()) == data[i];
    ok &= reinterpret_cast<int64_t>(impl->grad().unsafeGetTensorImpl()) == grads[i];
  }
  return ok;
}

// Counts one in-place update in the version counter of every tensor of the list params (as
// an in-place torch op does), so that autograd refuses a backward through a value the step
// overwrote. Inference tensors (no counter) and other objects are skipped.
extern "C" void bump_versions(PyObject* params) {
  if (!PyList_Check(params)) return;
  const Py_ssize_t n = PyList_GET_SIZE(params);
  PyObject** items = PySequence_Fast_ITEMS(params);
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (i + kAhead < n) {  // the counters of later tensors (their TensorImpls are warm)
      if (c10::TensorImpl* near = impl_of(items[i + kAhead])) {
        if (!near->is_inference()) fetch(counter_of(near), 1);
      }
    }
    c10::TensorImpl* impl = impl_of(items[i]);
    if (impl != nullptr && !impl->is_inference()) impl->bump_version();
  }
}

// Adds one to the n float32 step counters at steps (a bucket's, one per parameter).
extern "C" void count_step(float* steps, int64_t n) {
  for (int64_t i = 0; i < n; ++i) steps[i] += 1.0f;
}

// 1 when lists a and b hold the very same objects in the same order; else 0. Compares the
// pointers only: no object is touched (right after a step, each touch is a cache miss).
extern "C" int same_items(PyObject* a, PyObject* b) {
  if (!PyList_Check(a) || !PyList_Check(b)) return 0;
  const Py_ssize_t n = PyList_GET_SIZE(a);
  if (PyList_GET_SIZE(b) != n) return 0;
  return n == 0 || std::memcmp(PySequence_Fast_ITEMS(a), PySequence_Fast_ITEMS(b),
                               n * sizeof(PyObject*)) == 0;
}
"""


def _declare(lib: ctypes.CDLL) -> None:
    lib.slots_hold.argtypes = [ctypes.py_object, ctypes.c_void_p, ctypes.c_void_p]
    lib.slots_hold.restype = ctypes.c_int
    lib.same_items.argtypes = [ctypes.py_object, ctypes.py_object]
    lib.same_items.restype = ctypes.c_int
    lib.count_step.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.count_step.restype = None
    lib.bump_versions.argtypes = [ctypes.py_object]
    lib.bump_versions.restype = None


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


def same_items(a: list[Tensor], b: list[Tensor]) -> bool:
    """Whether lists ``a`` and ``b`` hold the same objects (``is``) in the same order: one
    comparison of their item arrays once :data:`LIBRARY` is built, else in Python."""
    lib = LIBRARY.get()
    if lib is not None and type(a) is list and type(b) is list:
        return bool(lib.same_items(a, b))
    return len(a) == len(b) and all(map(operator.is_, a, b))


def bump_versions(params: list[Tensor]) -> None:
    """Count one in-place update of each tensor of ``params`` in its version counter, as
    torch.optim's in-place ops do: the flat engines write the parameters' slots, which
    autograd does not see, so without this a backward through a graph that saved a parameter
    before the step would use the new values instead of refusing (``... has been modified
    by an inplace operation``).

    One C++ pass once :data:`LIBRARY` is built (on 2,000 parameters a few microseconds
    right after the check, whose pass left their objects in the caches), else
    :func:`torch.autograd.graph.increment_version` (0.2-0.7 ms there)."""
    lib = LIBRARY.get()
    if lib is not None and type(params) is list:
        lib.bump_versions(params)
    else:
        increment_version([p for p in params if not p.is_inference()])


def count_step(steps: Tensor, address: int | None) -> None:
    """Add one to every step counter of ``steps`` (float32) in place.

    ``address``: ``steps.data_ptr()`` where ``steps`` is a contiguous float32 CPU
    tensor, else None. There, once :data:`LIBRARY` is built, one C loop (no torch
    op: right after a step the first op costs tens of microseconds); else ``add_``.
    """
    lib = LIBRARY.get() if address is not None else None
    if lib is not None:
        lib.count_step(address, steps.numel())
    else:
        steps.add_(1)


def python_check(
    params: list[Tensor], data_ptrs: list[int], grad_views: list[Tensor | None]
) -> bool:
    """:func:`slots_hold`'s answer computed in Python (before the library is built)."""
    return list(map(Tensor.data_ptr, params)) == data_ptrs and all(
        map(operator.is_, map(_GRAD, params), grad_views)
    )
