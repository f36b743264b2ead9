"""A compiled kernel's scalar part as Python arithmetic on floats.

A :class:`~descentlab.engine.kernels.Kernel` splits its traced graph into the
0-dim computations (bias corrections, NAdam's μ schedule, ASGD's η and μ)
and the elementwise loop. The scalar part is a few dozen operations on
0-dim tensors; run as tensor operations, each costs microseconds of dispatch,
which is most of a step on a small model. :class:`ScalarProgram` runs the
same graph on Python floats instead (float64 arithmetic, the same IEEE
operations; results of float32 nodes are rounded to float32), so the whole
scalar part, generated as one Python function (a line per node), costs
a few microseconds.

Only graphs made of the operations in :data:`_OPS` on float64, float32 and
bool values are turned into a program (:meth:`ScalarProgram.build` returns
``None`` otherwise). A step whose arithmetic raises in Python where torch
returns inf or nan (a division by zero, ``sqrt`` of a negative number) makes
:meth:`ScalarProgram.run` raise :class:`ArithmeticError`, and the kernel runs
that step's scalar part with tensors instead, so the values are torch's.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, fx

__all__ = ["ScalarProgram"]

aten = torch.ops.aten


def _float32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def _same(x: Any) -> Any:
    return x


def _where(cond: Any, a: Any, b: Any) -> Any:
    return a if cond else b


def _pow(a: float, b: float) -> float:
    return math.pow(a, b)


#: aten overload → Python function of the node's positional arguments
_OPS: dict[Any, Callable[..., Any]] = {
    aten.add.Tensor: operator.add,
    aten.add.Scalar: operator.add,
    aten.sub.Tensor: operator.sub,
    aten.sub.Scalar: operator.sub,
    aten.rsub.Scalar: lambda a, b: b - a,
    aten.rsub.Tensor: lambda a, b: b - a,
    aten.mul.Tensor: operator.mul,
    aten.mul.Scalar: operator.mul,
    aten.div.Tensor: operator.truediv,
    aten.div.Scalar: operator.truediv,
    aten.pow.Tensor_Tensor: _pow,
    aten.pow.Tensor_Scalar: _pow,
    aten.pow.Scalar: _pow,
    aten.sqrt.default: math.sqrt,
    aten.reciprocal.default: lambda a: 1.0 / a,
    aten.neg.default: operator.neg,
    aten.clone.default: lambda a: a,
    aten.scalar_tensor.default: lambda a: a,
    aten.fill.Tensor: lambda _, value: value,
    aten.fill.Scalar: lambda _, value: value,
    aten.where.self: _where,
    aten.eq.Scalar: operator.eq,
    aten.eq.Tensor: operator.eq,
    aten.ne.Scalar: operator.ne,
    aten.gt.Scalar: operator.gt,
    aten.gt.Tensor: operator.gt,
    aten.ge.Scalar: operator.ge,
    aten.lt.Scalar: operator.lt,
    aten.lt.Tensor: operator.lt,
    aten.le.Scalar: operator.le,
}
_DTYPES = {torch.float64: float, torch.float32: _float32, torch.bool: bool}
#: operations written as Python operators in the generated function
_INFIX = {operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/",
          operator.eq: "==", operator.ne: "!=", operator.gt: ">", operator.ge: ">=",
          operator.lt: "<", operator.le: "<="}


class ScalarProgram:
    """The scalar part of a kernel as a list of float operations (see the module docstring).

    ``run(inputs)`` takes the scalar placeholders' values (floats, in the
    graph's placeholder order) and returns the values of the graph's outputs
    and, for each input the graph writes (``copy_`` into a placeholder: a
    rule's scalar state such as ``mu_product``), its new value.
    """

    def __init__(
        self,
        steps: list[tuple[int, Callable[..., Any], tuple[Any, ...], Callable[[Any], Any]]],
        outputs: list[int],
        writes: list[tuple[int, int]],
        inputs: int,
    ) -> None:
        self._steps, self.outputs, self.writes = steps, outputs, writes
        self._function = self._generate(inputs)

    def _generate(self, inputs: int) -> Callable[..., Any]:
        """The program as one generated Python function of the inputs (no interpreter loop).

        Each step becomes one line (``v7 = float(v3 * v5)``; operators written
        inline, other operations called by name), so a scalar part of a few
        dozen operations runs in a few microseconds.
        """
        names: dict[str, Any] = {}
        lines = [f"def program({', '.join(f'v{i}' for i in range(inputs))}):"]
        for out, fn, args, cast in self._steps:
            terms = [f"v{a}" if is_node else repr(a) for is_node, a in args]
            infix = _INFIX.get(fn)
            if infix is not None and len(terms) == 2:
                expr = f"({terms[0]} {infix} {terms[1]})"
            elif fn is operator.neg:
                expr = f"(-{terms[0]})"
            else:
                names[f"f{out}"] = fn
                expr = f"f{out}({', '.join(terms)})"
            if cast is not _same:
                names[f"c{out}"] = cast
                expr = f"c{out}({expr})"
            lines.append(f"    v{out} = {expr}")
        outputs = ", ".join(f"v{i}" for i in self.outputs)
        writes = ", ".join(f"({i}, v{j})" for i, j in self.writes)
        lines.append(f"    return [{outputs}], [{writes}]")
        namespace = {"inf": math.inf, "nan": math.nan, **names}
        exec(compile("\n".join(lines), "<descentlab scalar program>", "exec"), namespace)
        return namespace["program"]

    @classmethod
    def build(cls, graph: fx.Graph) -> ScalarProgram | None:
        """The program of ``graph`` (placeholders, then nodes, then one tuple output), or None."""
        slot: dict[fx.Node, int] = {}
        steps, writes, outputs = [], [], []
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        for node in placeholders:
            slot[node] = len(slot)
        for node in graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                outputs = [slot[n] for n in node.args[0]]
                continue
            val = node.meta.get("val")
            if node.op != "call_function":
                return None
            if node.kwargs and node.target is not aten.scalar_tensor.default:
                return None  # (a constant's kwargs are its dtype and device: the cast covers them)
            if node.target is aten.copy_.default:  # a write into an input: keep its new value
                dst, src = node.args
                if dst not in placeholders or not isinstance(src, fx.Node):
                    return None
                writes.append((slot[dst], slot[src]))
                slot[node] = slot[src]
                continue
            fn = _OPS.get(node.target)
            if isinstance(val, Tensor) and val.dim() == 0:
                cast = _DTYPES.get(val.dtype)
            else:  # the kernel's own clones of inputs carry no metadata: their input's type
                cast = _same if node.target is aten.clone.default else None
            if fn is None or cast is None:
                return None
            args = tuple((True, slot[a]) if isinstance(a, fx.Node) else (False, a)
                         for a in node.args)
            if any(not is_node and not isinstance(a, (int, float, bool)) for is_node, a in args):
                return None
            slot[node] = len(placeholders) + len(steps)  # its place in run()'s values
            steps.append((slot[node], fn, args, cast))
        return cls(steps, outputs, writes, len(placeholders))

    def run(self, inputs: Sequence[float]) -> tuple[list[Any], list[tuple[int, Any]]]:
        """The outputs' values and the inputs' new values (``(input index, value)`` pairs).

        Raises ArithmeticError where Python refuses what torch computes as inf or nan.
        """
        try:
            return self._function(*inputs)
        except (ValueError, OverflowError, ZeroDivisionError) as err:
            raise ArithmeticError(str(err)) from None
