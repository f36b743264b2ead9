"""Compiled kernels' scalar part on Python floats: the same values as on 0-dim tensors."""

from __future__ import annotations

import pytest
import torch

from descentlab.engine import kernels
from descentlab.engine.scalar_program import ScalarProgram
from tests.engine.helpers import rel_diff, train


def _kernel(rule_key: str):
    (kernel,) = [k for k in kernels._KERNELS.values()
                 if k.key[0] == rule_key and k.dtype == torch.float64]
    return kernel


@pytest.mark.parametrize(("name", "key"), [("nadam", "NAdamRule"), ("radam", "RAdamRule")])
def test_program_gives_the_tensor_graphs_values(name, key, monkeypatch):
    """Every output and every written scalar state, against the 0-dim tensor graph."""
    monkeypatch.setattr(kernels, "_KERNELS", {})  # only this test's kernels
    train(name, "compiled", steps=1)
    kernel = _kernel(key)
    assert kernel._program is not None
    first = 2 + len(kernel.state_keys)
    for step in (1, 2, 5, 6, 1000):
        scalars = [torch.tensor(0.37, dtype=torch.float64) for _ in kernel.scalar_keys]
        h = [torch.tensor(v, dtype=torch.float64) for v in (0.01, 0.9, 0.999, 1e-8, 0.1, 4e-3)]
        inputs = [*scalars, torch.tensor(float(step), dtype=torch.float64),
                  *h[: len(kernel.h_keys)]]
        picked = [inputs[i - first] for i in kernel._scalar_inputs]
        values = [float(t) for t in picked]
        expected = kernel._scalar_part(*[t.clone() for t in picked])
        outputs, writes = kernel._program.run(values)
        assert len(outputs) == len(expected)
        for got, want in zip(outputs, expected, strict=True):
            assert got == pytest.approx(float(want), rel=1e-15, abs=0.0)
        mutated = [t.clone() for t in picked]
        kernel._scalar_part(*mutated)
        for index, value in writes:
            assert value == pytest.approx(float(mutated[index]), rel=1e-15)


def test_arithmetic_python_refuses_raises_arithmetic_error():
    graph = torch.fx.Graph()
    a = graph.placeholder("a")
    b = graph.placeholder("b")
    q = graph.call_function(torch.ops.aten.div.Tensor, (a, b))
    r = graph.call_function(torch.ops.aten.sqrt.default, (a,))
    for node in (a, b, q, r):
        node.meta["val"] = torch.zeros((), dtype=torch.float64)
    graph.output((q, r))
    program = ScalarProgram.build(graph)
    assert program is not None
    assert program.run([4.0, 2.0])[0] == [2.0, 2.0]
    with pytest.raises(ArithmeticError):
        program.run([1.0, 0.0])  # torch: inf
    with pytest.raises(ArithmeticError):
        program.run([-1.0, 1.0])  # torch: nan


def test_unsupported_graphs_have_no_program():
    graph = torch.fx.Graph()
    a = graph.placeholder("a")
    e = graph.call_function(torch.ops.aten.erf.default, (a,))
    for node in (a, e):
        node.meta["val"] = torch.zeros((), dtype=torch.float64)
    graph.output((e,))
    assert ScalarProgram.build(graph) is None


def test_steps_where_python_refuses_use_torch_arithmetic(monkeypatch):
    """A step whose Python arithmetic raises runs the tensor graph: same results, state written."""
    monkeypatch.setattr(kernels, "_KERNELS", {})  # only this test's kernels
    train("nadam", "compiled", steps=1)
    kernel = _kernel("NAdamRule")

    def refuse(values):
        raise ArithmeticError("float division by zero")

    monkeypatch.setattr(kernel._program, "run", refuse)
    ref, _ = train("nadam", "reference")
    ours, opt = train("nadam", "compiled")
    assert rel_diff(ours, ref) <= 1e-12
    mu_products = [float(s["mu_product"]) for s in opt.state.values()]
    assert all(0 < m < 1 for m in mu_products)


def test_compiled_still_matches_reference_with_python_scalars():
    ref, _ = train("asgd", "reference", setting={"lr": 0.05, "t0": 3.0})
    ours, _ = train("asgd", "compiled", setting={"lr": 0.05, "t0": 3.0})
    assert rel_diff(ours, ref) <= 1e-12
