"""Compiled update kernels: a rule's update traced once, split, and compiled with inductor.

A :class:`Kernel` is one rule with fixed flags (and ``maximize``, dtype and
device), compiled for 1-D buffers of any length. It is built in three steps:

1. **trace** ``rule.update`` with :func:`torch.fx.experimental.proxy_tensor.make_fx`
   (functionalized, fake tensors) on 1-D buffers, with every hyperparameter
   and the step number as 0-dim float64 tensors;
2. **split** the graph in two: the *scalar* part (nodes computed only from
   0-dim inputs: bias corrections such as 1 − β₁ᵗ, NAdam's μ schedule and
   ``mu_product``) and the *elementwise* part, which receives the scalar
   results as one 1-D float64 tensor of coefficients. Without the split,
   inductor inlines the scalar expressions into the elementwise loop and
   evaluates ``pow`` once per vector of 16 elements, which halves the speed;
3. **compile** the elementwise part with inductor (:func:`compile_elementwise`:
   straight from the traced graph, without dynamo, so a background compile
   leaves torch's process-wide ``is_compiling()`` flag alone), the buffer
   length a symbol: one fused loop reading and writing each buffer once, for
   every buffer length, with the coefficients as a tensor, so neither a schedule changing
   ``lr`` nor a growing step count recompiles. The scalar part (a few dozen
   0-dim operations) runs on Python floats at each call
   (:class:`~descentlab.engine.scalar_program.ScalarProgram`: microseconds,
   where the same operations on 0-dim tensors cost a few hundred), or as
   tensor operations for graphs it does not cover.

A call runs inductor's generated ``call`` function directly where it can
(:func:`direct_call`): AOTAutograd's runtime wrapper around it adds nothing
to an update whose results the kernel writes in place, yet costs about 0.1 ms
a call right after another optimizer's step has evicted its code and data
from the caches (2,000 × 1,000 float32 parameters: 1.12 against 1.00 ms).

The inductor cache goes to :func:`cache_dir` (``$DESCENTLAB_CACHE_DIR`` or
``~/.cache/descentlab/inductor``) unless ``$TORCHINDUCTOR_CACHE_DIR`` is set,
so later processes load compiled kernels instead of compiling them again.
"""

from __future__ import annotations

import array
import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, fx
from torch.autograd.graph import increment_version

from descentlab.engine.base import Run
from descentlab.engine.host_scalars import HostScalars, ThreadArrays
from descentlab.engine.scalar_program import ScalarProgram
from descentlab.rules.base import ELEMENTWISE

__all__ = [
    "Kernel",
    "KernelKey",
    "cache_dir",
    "compile_elementwise",
    "direct_call",
    "get_kernel",
    "kernel_key",
    "COMPILE_SIZE",
    "PARALLEL_MIN",
]

#: Buffer length the kernels are compiled with (a large hint makes inductor emit a parallel loop).
COMPILE_SIZE = 1 << 20
#: Shorter runs execute the compiled loop on one thread (torch's own grain size for eager ops).
PARALLEL_MIN = 1 << 15

#: (rule class, its module, sorted flags, maximize, dtype, device, state keys,
#: (scalar-state key, dtype) pairs, hyperparameter keys): see :func:`kernel_key`
KernelKey = tuple[Any, ...]

_KERNELS: dict[KernelKey, Kernel] = {}
_LOCK = threading.Lock()


def cache_dir() -> Path:
    """Where inductor's compile cache lives for descentlab kernels (see the module docstring).

    (Importing inductor sets ``$TORCHINDUCTOR_CACHE_DIR`` to torch's default
    directory when it is unset; that value counts as unset here.)
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    explicit = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if explicit and os.path.abspath(explicit) != os.path.abspath(default_cache_dir()):
        return Path(explicit)
    root = os.environ.get("DESCENTLAB_CACHE_DIR") or Path.home() / ".cache" / "descentlab"
    return Path(root) / "inductor"


@contextlib.contextmanager
def _inductor_cache() -> Iterator[None]:
    """Point inductor at :func:`cache_dir` while compiling, restoring the environment after."""
    saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir())
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved


def _scalar(value: Any, device: torch.device) -> Tensor:
    return torch.tensor(value, dtype=torch.float64, device=device)


class Kernel:
    """One rule update compiled for 1-D buffers (see the module docstring).

    Call it as ``kernel(param, grad, state, scalars, h, step)``: ``state``
    maps the rule's elementwise state keys to buffers of ``param``'s length,
    ``scalars`` its scalar-state keys to 0-dim tensors (updated in place),
    ``h`` the hyperparameters to floats, ``step`` is the 1-based step.
    """

    def __init__(
        self, run: Run, key: KernelKey, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.key = key
        self.rule, self.flags = run.rule, dict(run.flags)
        self.maximize = run.maximize
        self.state_keys, self.h_keys = key[6], key[8]
        self.scalar_keys = tuple(k for k, _ in key[7])
        self._scalar_dtypes = tuple(d for _, d in key[7])
        self.dtype, self.device = dtype, torch.device(device)
        self.compile_seconds: float | None = None
        self._scalar_part: fx.GraphModule | None = None
        self._program: ScalarProgram | None = None
        self._elementwise: Any = None
        self._direct: Any = None
        self._scalar_inputs: list[int] = []
        self._buffer_inputs: list[int] = []
        self._coefficient_buffers = ThreadArrays("d")
        self._ready = threading.Event()
        self._build_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        #: The exception a background build raised, if any.
        self.error: BaseException | None = None

    # -- building ---------------------------------------------------------------------

    def _update(self, *args: Tensor) -> None:
        """``rule.update`` on flat positional arguments (the form that is traced)."""
        ns, nc = len(self.state_keys), len(self.scalar_keys)
        param, grad = args[0], args[1]
        state = dict(zip(self.state_keys, args[2 : 2 + ns], strict=True))
        state.update(zip(self.scalar_keys, args[2 + ns : 2 + ns + nc], strict=True))
        step = args[2 + ns + nc]
        h = dict(zip(self.h_keys, args[3 + ns + nc :], strict=True))
        g = -grad if self.maximize else grad
        self.rule.update(param, g, state, h, step, self.flags)

    def _examples(self, n: int) -> list[Tensor]:
        def buf() -> Tensor:
            # deterministic values: a background build must not draw from the global RNG
            return torch.linspace(0.5, 1.5, n, dtype=self.dtype, device=self.device)

        scalars = [torch.ones((), dtype=d, device=self.device) for d in self._scalar_dtypes]
        return [
            buf(),
            buf(),
            *[buf() for _ in self.state_keys],
            *scalars,
            _scalar(1.0, self.device),
            *[_scalar(0.5, self.device) for _ in self.h_keys],
        ]

    def build(self) -> None:
        """Trace, split and compile (the slow part: seconds cold, about one warm).

        Safe to call from several threads: the kernel is built once.
        """
        with self._build_lock:
            if self.ready:
                return
            start = time.perf_counter()
            self._trace_and_compile()
            self.compile_seconds = time.perf_counter() - start
            self._ready.set()

    def build_in_background(self) -> None:
        """Start :meth:`build` in a background thread (once); failures are kept in :attr:`error`.

        The thread is not a daemon (tearing a daemon thread down inside the
        compiler aborts the interpreter): when the process ends during a build,
        the build fails at its next step (Python refuses new threads at
        shutdown), so the process exits promptly and cleanly, compiling nothing.
        """

        def target() -> None:
            try:
                self.build()
            except Exception as exc:  # noqa: BLE001 (kept for the caller to report)
                self.error = exc

        with _LOCK:
            if self._thread is None and not self.ready:
                self._thread = threading.Thread(target=target, name="descentlab-compile")
                self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background build; True when the kernel is ready."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.ready

    def _trace_and_compile(self) -> None:
        from torch.fx.experimental.proxy_tensor import make_fx

        traced = make_fx(
            torch.func.functionalize(self._update, remove="mutations_and_views"),
            tracing_mode="fake",
        )(*self._examples(64))
        self._split(traced)
        examples = self._examples(COMPILE_SIZE)
        with torch.no_grad():
            coefficients = self._coefficients(self._scalar_part(
                *[examples[i] for i in self._scalar_inputs]
            ), self.device)
        buffers = [examples[i] for i in self._buffer_inputs]
        self._elementwise = compile_elementwise(self._elementwise_module, buffers, coefficients)
        self._direct = direct_call(self._elementwise, buffers, coefficients)

    @staticmethod
    def _coefficients(values: Any, device: torch.device) -> Tensor:
        """The scalar part's 0-dim tensor results as the elementwise part's one input."""
        if not values:
            return torch.zeros(0, dtype=torch.float64, device=device)
        return torch.stack([v.to(torch.float64) for v in values])

    def _split(self, gm: fx.GraphModule) -> None:
        """Separate the 0-dim computations from the elementwise ones (see the module docstring)."""

        def is_scalar_value(node: fx.Node) -> bool:
            val = node.meta.get("val")
            return not isinstance(val, Tensor) or val.dim() == 0

        nodes = list(gm.graph.nodes)
        placeholders = [n for n in nodes if n.op == "placeholder"]
        scalar: set[fx.Node] = set()
        for node in nodes:
            if node.op == "output":
                continue
            if node.op == "placeholder" or all(i in scalar for i in node.all_input_nodes):
                if is_scalar_value(node):
                    scalar.add(node)
        needed = [
            n
            for n in nodes
            if n in scalar
            and n.op != "placeholder"
            and any(u not in scalar and u.op != "output" for u in n.users)
        ]
        needed += [
            n
            for n in placeholders
            if n in scalar and any(u not in scalar and u.op != "output" for u in n.users)
        ]

        sgraph, senv = fx.Graph(), {}
        for node in placeholders:
            if node in scalar:
                senv[node] = sgraph.node_copy(node)
        # the elementwise part must see scalar inputs as they were on entry, not as updated here
        outputs = {
            n: sgraph.call_function(torch.ops.aten.clone.default, (senv[n],))
            for n in needed
            if n.op == "placeholder"
        }
        for node in nodes:
            if node in scalar and node.op != "placeholder":
                senv[node] = sgraph.node_copy(node, lambda n: senv[n])
        sgraph.output(tuple(outputs.get(n, senv.get(n)) for n in needed))
        mgraph, menv = fx.Graph(), {}
        for node in placeholders:
            if node not in scalar:
                menv[node] = mgraph.placeholder(node.name)
        coefficients = mgraph.placeholder("coefficients")  # float64, one per needed scalar
        for i, node in enumerate(needed):
            value = mgraph.call_function(torch.ops.aten.select.int, (coefficients, 0, i))
            dtype = node.meta["val"].dtype if isinstance(node.meta.get("val"), Tensor) else None
            if dtype is not None and dtype != torch.float64:
                value = mgraph.call_function(
                    torch.ops.aten._to_copy.default, (value,), {"dtype": dtype}
                )
            menv[node] = value
        for node in nodes:
            if node not in scalar and node.op not in ("placeholder", "output"):
                menv[node] = mgraph.node_copy(node, lambda n: menv[n])
        mgraph.output(None)
        self._scalar_part = fx.GraphModule(gm, sgraph)
        self._program = ScalarProgram.build(sgraph)
        self._elementwise_module = fx.GraphModule(gm, mgraph)
        self._scalar_inputs = [i for i, n in enumerate(placeholders) if n in scalar]
        self._buffer_inputs = [i for i, n in enumerate(placeholders) if n not in scalar]

    @property
    def ready(self) -> bool:
        """Whether :meth:`build` has finished."""
        return self._ready.is_set()

    # -- running ------------------------------------------------------------------------

    def __call__(
        self,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        scalars: dict[str, Tensor],
        h: dict[str, float],
        step: int,
    ) -> None:
        buffers = [param, grad, *[state[k] for k in self.state_keys]]
        coefficients = self._run_scalar_part(param.device, scalars, h, step)
        threads = torch.get_num_threads()
        if param.numel() >= PARALLEL_MIN or threads == 1:
            self._run_elementwise(buffers, coefficients)
            return
        # the compiled loop always opens an OpenMP region; for a short run one thread is faster
        # (and on a busy machine, waiting for a second thread can cost milliseconds)
        torch.set_num_threads(1)
        try:
            self._run_elementwise(buffers, coefficients)
        finally:
            torch.set_num_threads(threads)

    def _run_elementwise(self, buffers: list[Tensor], coefficients: Tensor) -> None:
        """The compiled loop on ``[param, grad, *state]``: directly where :func:`direct_call`
        allowed it (then the parameter's and the state's versions are counted here)."""
        if self._direct is None:
            self._elementwise(*buffers, coefficients)
            return
        self._direct([*buffers, coefficients])
        increment_version([buffers[0], *buffers[2:]])

    def _run_scalar_part(
        self, device: torch.device, scalars: dict[str, Tensor], h: Mapping[str, float], step: int
    ) -> Tensor:
        """The coefficients for this call; the scalar state (``scalars``) updated in place."""
        first = 2 + len(self.state_keys)  # argument index of the first 0-dim input
        host = scalars if isinstance(scalars, HostScalars) else None
        if self._program is not None:
            own = ([host.value(k) for k in self.scalar_keys] if host is not None
                   else [float(scalars[k]) for k in self.scalar_keys])
            values = [*own, float(step), *[float(h[k]) for k in self.h_keys]]
            try:
                outputs, writes = self._program.run(
                    [values[i - first] for i in self._scalar_inputs]
                )
            except ArithmeticError:  # inf or nan where Python refuses: torch's own arithmetic
                pass
            else:
                for index, value in writes:
                    key = self.scalar_keys[self._scalar_inputs[index] - first]
                    if host is not None:
                        host.set(key, value)
                    else:
                        scalars[key].fill_(value)
                if device.type != "cpu" or not outputs:
                    return torch.tensor(outputs, dtype=torch.float64, device=device)
                return self._host_coefficients(outputs)
        inputs = [
            *[scalars[k] for k in self.scalar_keys],
            _scalar(float(step), device),
            *[_scalar(h[k], device) for k in self.h_keys],
        ]
        picked = [inputs[i - first] for i in self._scalar_inputs]
        return self._coefficients(self._scalar_part(*picked), device)


    def _host_coefficients(self, outputs: list[Any]) -> Tensor:
        """``outputs`` in this thread's coefficient tensor, a view of a host array.

        Writing a few floats into an array is about a microsecond, where
        ``torch.tensor(outputs)`` costs several; the compiled loop has read
        the coefficients by the time its call returns, so the next call may
        overwrite them (one array per thread: kernels are shared).
        """
        values, tensor = self._coefficient_buffers.get(len(outputs))
        values[:] = array.array("d", outputs)
        return tensor


def direct_call(compiled: Any, buffers: list[Tensor], coefficients: Tensor) -> Any:
    """inductor's generated ``call(args)`` under the AOTAutograd wrapper ``compiled``, if
    calling it directly does what ``compiled`` does; else None.

    Checked once, on copies of the first 100 elements of the example ``buffers``: the
    direct call must return no tensor (the updates are written into the inputs) and leave
    every buffer with the bits the wrapped call leaves.
    """
    direct = getattr(compiled, "current_callable", None)
    if not callable(direct):
        return None
    wrapped = [b[:100].clone() for b in buffers]
    own = [b.clone() for b in wrapped]
    with torch.no_grad():
        compiled(*wrapped, coefficients)
        outputs = direct([*own, coefficients])
    if any(isinstance(o, Tensor) for o in outputs or ()):
        return None
    return direct if all(map(torch.equal, wrapped, own)) else None


def compile_elementwise(module: fx.GraphModule, buffers: list[Tensor], coefficients: Tensor) -> Any:
    """Compile an elementwise graph with inductor for 1-D buffers of any (one, shared) length.

    The graph goes straight to inductor (:func:`torch._inductor.compile_fx.compile_fx`),
    not through ``torch.compile``: dynamo is never entered, so a compile in a
    background thread leaves torch's process-wide ``torch.compiler.is_compiling()``
    flag alone (torch.optim and user code in other threads keep their eager paths),
    and inductor's save and restore of the global random generator around the
    build is skipped in the building thread (:func:`_keep_other_threads_random_state`).
    (What remains process-wide during a build: inductor's own config, patched
    to ``compile_threads=1``, ``$TORCHINDUCTOR_CACHE_DIR`` (:func:`cache_dir`),
    and, while graphs are traced, torch.fx's private ``is_fx_tracing()`` flag,
    read in torch only by ``torch.nested`` and ``torch.export.unflatten``.)
    The buffers are handed to inductor as fake tensors whose length is one
    symbol (hint: their real length, so a large hint gives a parallel loop),
    hence one compiled loop for every length.
    """
    import copy

    import torch._inductor.config
    from torch._inductor.compile_fx import compile_fx
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import (
        DimDynamic,
        ShapeEnv,
        StatelessSymbolicContext,
    )

    _keep_other_threads_random_state()
    mode = FakeTensorMode(shape_env=ShapeEnv())
    dynamic = StatelessSymbolicContext(dynamic_sizes=[DimDynamic.DYNAMIC], constraint_sizes=[None])
    fakes = [mode.from_tensor(b, symbolic_context=dynamic) for b in buffers]
    fakes.append(mode.from_tensor(coefficients))
    # inductor may rewrite the module it is given: a copy (the split graph stays inspectable)
    owned = fx.GraphModule(module, copy.deepcopy(module.graph))
    # compile_threads=1: compile in this process, so nothing outlives an interrupted build
    with (
        _inductor_cache(),
        torch._inductor.config.patch(compile_threads=1),
        torch.no_grad(),
        _building(),
    ):
        return compile_fx(owned, fakes)


#: which threads are building a kernel (see :func:`_keep_other_threads_random_state`)
_BUILDING = threading.local()


@contextlib.contextmanager
def _building() -> Iterator[None]:
    _BUILDING.active = True
    try:
        yield
    finally:
        _BUILDING.active = False


def _keep_other_threads_random_state() -> None:
    """Stop inductor from rewinding the global random generator after our builds.

    Inductor and AOTAutograd wrap a compile in ``preserve_rng_state()``: the
    global CPU generator is saved when the compile starts and restored when it
    ends. In a background thread that rewinds every number the training
    thread drew meanwhile (dropout masks, data shuffles would repeat). Our
    kernels draw no random numbers, so in a thread building one of them the
    guard is made a no-op; everywhere else it is torch's. (Installed once,
    on both names inductor calls it by.)
    """
    import torch._dynamo.utils as dynamo_utils
    import torch._functorch.aot_autograd as aot_autograd

    original = dynamo_utils.preserve_rng_state
    if getattr(original, "descentlab_thread_aware", False):
        return

    @contextlib.contextmanager
    def preserve_rng_state() -> Iterator[None]:
        if getattr(_BUILDING, "active", False):
            yield
        else:
            with original():
                yield

    preserve_rng_state.descentlab_thread_aware = True  # type: ignore[attr-defined]
    dynamo_utils.preserve_rng_state = preserve_rng_state
    aot_autograd.preserve_rng_state = preserve_rng_state


def kernel_key(
    run: Run, param: Tensor, state: Mapping[str, Tensor], scalars: Mapping[str, Tensor]
) -> KernelKey:
    """Everything that changes the traced graph of one elementwise call (see :data:`KernelKey`).

    Hyperparameter *values*, the step and the buffer length are inputs of
    the kernel, not part of its graph, so they are not in the key.
    """
    return (
        type(run.rule).__qualname__,
        type(run.rule).__module__,
        tuple(sorted(run.flags.items())),
        bool(run.maximize),
        param.dtype,
        param.device,
        tuple(state),
        tuple((k, v.dtype) for k, v in scalars.items()),
        tuple(run.h),
    )


def get_kernel(
    run: Run, param: Tensor, state: Mapping[str, Tensor], scalars: Mapping[str, Tensor]
) -> Kernel:
    """The (process-wide, shared) kernel for this call's structure, created unbuilt if new.

    Only elementwise rules have kernels: a tensor rule raises a TypeError.
    """
    if run.rule.kind != ELEMENTWISE:
        raise TypeError(
            f"{run.rule.name} is a {run.rule.kind} rule: it is never compiled into an "
            "elementwise kernel"
        )
    key = kernel_key(run, param, state, scalars)
    with _LOCK:
        kernel = _KERNELS.get(key)
        if kernel is None:
            kernel = _KERNELS[key] = Kernel(run, key, param.dtype, param.device)
        return kernel
