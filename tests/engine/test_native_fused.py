"""The default engine on native C loops (NAdam) over flat buffers: the loop against an
operation-by-operation numpy reference (bitwise), torch.optim.NAdam to rounding, and the
paths it leaves to the other kernels."""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
import pytest
import torch

import descentlab
from descentlab.engine import kernels, native_fused
from descentlab.engine.base import Run
from descentlab.engine.host_scalars import HostScalars
from descentlab.rules import nadam_kernel
from descentlab.rules.adam import NAdamRule
from tests.optim.helpers import float64_default, max_rel_diff

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc on PATH")

SETTINGS: list[dict[str, Any]] = [
    {"lr": 0.01},
    {"lr": 0.01, "weight_decay": 0.1},
    {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
    {"lr": 0.01, "weight_decay": 0.1, "maximize": True},
    {"lr": 0.01, "betas": (0.0, 0.5), "momentum_decay": 0.0, "eps": 1e-3, "maximize": True},
]
SHAPES = [(37,), (5, 7), (1000,), (3, 3, 3), (1,), (), (300, 200)]


@pytest.fixture
def lib():
    """The NAdam loop's library, built (or loaded from the cache)."""
    loaded = nadam_kernel.LIBRARY.wait()
    if loaded is None:
        pytest.fail(f"gcc is on PATH but the library did not build: {nadam_kernel.LIBRARY.error}")
    return loaded


def _numpy_step(p, g, m, v, h: dict[str, float], step: int, mode, maximize: bool,
                mu_product: float):
    """The loop's arithmetic written out in numpy (IEEE operations, correctly rounded square
    root), in the parameter's dtype; the coefficients from float64 on the host, as the eager
    rule's 0-dim tensors compute them (``x / tensor`` is ``tensor.reciprocal() * x``)."""
    dt = p.dtype.type
    t = float(step)
    mu = h["beta1"] * (1 - 0.5 * 0.96 ** (t * h["momentum_decay"]))
    mu_next = h["beta1"] * (1 - 0.5 * 0.96 ** ((t + 1) * h["momentum_decay"]))
    product = mu_product * mu
    grad_coef = (1.0 / (1 - product)) * (h["lr"] * (1 - mu))
    moment_coef = (1.0 / (1 - product * mu_next)) * (h["lr"] * mu_next)
    g = -g if maximize else g
    if mode == "coupled":
        g = g + p * dt(h["weight_decay"])
    if mode == "decoupled":
        p = p * dt(1 - h["lr"] * h["weight_decay"])
    m = m + (g - m) * dt(1 - h["beta1"])
    v = v * dt(h["beta2"]) + g * g * dt(1 - h["beta2"])
    d = np.sqrt(v / dt(1 - h["beta2"] ** t)) + dt(h["eps"])
    p = p - (g / d * dt(grad_coef) + m / d * dt(moment_coef))
    return p, m, v, product


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("setting", SETTINGS, ids=str)
@pytest.mark.parametrize("n", [1000, nadam_kernel.PARALLEL_MIN + 77])
@pytest.mark.parametrize("host", [True, False], ids=["host-scalars", "tensor-scalars"])
def test_loop_is_the_numpy_arithmetic_bit_for_bit(lib, dtype, setting, n, host):
    gen = torch.Generator().manual_seed(n)
    p, g, m = (torch.randn(n, generator=gen, dtype=dtype) for _ in range(3))
    v = torch.rand(n, generator=gen, dtype=dtype)
    opt = descentlab.NAdam([torch.zeros(1)], **setting)
    group = opt.param_groups[0]
    rule = opt.rule_for(group)
    assert type(rule) is NAdamRule
    h, flags = rule.scalars(group), rule.flags(group)
    mu_product = 0.45
    if host:
        scalars = HostScalars(["mu_product"])
        scalars.set("mu_product", mu_product)
    else:
        scalars = {"mu_product": torch.tensor(mu_product, dtype=torch.float64)}
    want = _numpy_step(p.numpy(), g.numpy(), m.numpy(), v.numpy(), h, 3,
                       flags["weight_decay"], setting.get("maximize", False), mu_product)
    version = p._version
    run = Run(rule, flags, h, setting.get("maximize", False), 3)
    call = nadam_kernel.step_call(lib, run, p, g, {"exp_avg": m, "exp_avg_sq": v}, scalars)
    assert float(scalars["mu_product"]) == mu_product  # nothing changes before the call
    call()
    for got, expected in zip((p, m, v), want[:3], strict=True):
        assert np.array_equal(got.numpy(), expected)
    assert float(scalars["mu_product"]) == want[3]
    assert p._version > version  # autograd sees the in-place update


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_auto_on_the_loop_follows_torch_nadam(lib, monkeypatch, dtype, setting):
    """60 steps on a model of several shapes, with idle parameters on some steps; the loop
    takes every run (no compiled kernel is made), torch.optim.NAdam is the reference (float64
    default dtype: torch keeps its mu_product in it)."""
    calls = []
    step_call = nadam_kernel.step_call
    monkeypatch.setitem(native_fused.NATIVE, NAdamRule, (
        nadam_kernel.LIBRARY, lambda *a: calls.append(1) or step_call(*a)))
    monkeypatch.setattr(kernels, "_KERNELS", {})
    torch.manual_seed(0)
    base = [torch.randn(s, dtype=dtype) for s in SHAPES]
    ours = [torch.nn.Parameter(t.clone()) for t in base]
    theirs = [torch.nn.Parameter(t.clone()) for t in base]
    opt = descentlab.NAdam(ours, engine="auto", **setting)
    with float64_default():
        ref = torch.optim.NAdam(theirs, foreach=False, **setting)
    for step in range(60):
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            idle = step % 7 == 3 and i % 2 == 0
            grad = None if idle else torch.randn(a.shape, dtype=dtype)
            a.grad, b.grad = grad, None if grad is None else grad.clone()
        opt.step()
        with float64_default():
            ref.step()
    assert calls and not kernels._KERNELS
    tolerance = 1e-13 if dtype == torch.float64 else 5e-6  # reached: 2.0e-15, 1.1e-6
    assert max_rel_diff(ours, theirs) <= tolerance
    assert float(opt.state[ours[0]]["mu_product"]) == pytest.approx(
        float(ref.state[theirs[0]]["mu_product"]), rel=1e-12)


def test_auto_is_the_compiled_engine_in_float32_and_the_eager_one_to_rounding(lib):
    results = {}
    for engine in ("auto", "compiled", "flat"):
        torch.manual_seed(1)
        params = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
        opt = descentlab.NAdam(params, engine=engine, lr=0.01, weight_decay=0.1)
        for _ in range(20):
            for p in params:
                p.grad = torch.randn(p.shape)
            opt.step()
        results[engine] = params
    # the compiled loop makes the same float32 operations; torch's eager sqrt is not always
    # correctly rounded
    for a, b in zip(results["auto"], results["compiled"], strict=True):
        assert torch.equal(a, b)
    assert 0 < max_rel_diff(results["auto"], results["flat"]) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_other_dtypes_are_left_to_the_other_paths(lib, dtype):
    params = [torch.nn.Parameter(torch.randn(100).to(dtype))]
    params[0].grad = torch.randn(100).to(dtype)
    opt = descentlab.NAdam(params, engine="auto")
    opt.step()
    group = opt.param_groups[0]
    rule = opt.rule_for(group)
    run = Run(rule, rule.flags(group), rule.scalars(group), False, 2)
    p = params[0].detach()
    state = {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
    scalars = {"mu_product": torch.ones((), dtype=torch.float64)}
    assert native_fused.native_call(run, p, p.clone(), state, scalars) is None
    strided = torch.zeros(200)[::2]
    f32 = {"exp_avg": torch.zeros(100), "exp_avg_sq": torch.zeros(100)}
    assert native_fused.native_call(run, strided, torch.zeros(100), f32, scalars) is None


def test_other_rules_have_no_loop():
    opt = descentlab.RAdam([torch.zeros(3)])
    group = opt.param_groups[0]
    rule = opt.rule_for(group)
    run = Run(rule, rule.flags(group), rule.scalars(group), False, 1)
    assert native_fused.native_call(run, torch.zeros(3), torch.zeros(3), {}, {}) is None
    assert not native_fused.native_pending(run)


def test_without_the_library_auto_compiles_as_before(monkeypatch):
    """DESCENTLAB_NATIVE=0: the library is unavailable, the default engine steps eagerly and
    builds its compiled kernel for the run (none is built while the library is pending)."""
    monkeypatch.setenv("DESCENTLAB_NATIVE", "0")
    monkeypatch.setattr(kernels, "_KERNELS", {})
    nadam_kernel.LIBRARY.reset()
    try:
        assert nadam_kernel.LIBRARY.wait() is None and nadam_kernel.LIBRARY.error
        params = [torch.nn.Parameter(torch.randn(1 << 17))]
        params[0].grad = torch.randn(1 << 17)
        opt = descentlab.NAdam(params, engine="auto")
        opt.step()
        (kernel,) = kernels._KERNELS.values()
        kernel.wait(timeout=600)
        assert kernel.error is None
    finally:
        monkeypatch.undo()
        nadam_kernel.LIBRARY.reset()


def test_nothing_is_compiled_while_the_library_is_being_built(monkeypatch):
    """While the loop's library is pending, the default engine steps eagerly and starts no
    inductor compile (the loop will take the run)."""
    monkeypatch.setattr(kernels, "_KERNELS", {})
    monkeypatch.setattr(type(nadam_kernel.LIBRARY), "get", lambda self: None)
    monkeypatch.setattr(type(nadam_kernel.LIBRARY), "ready", property(lambda self: False))
    monkeypatch.setattr(nadam_kernel.LIBRARY, "error", None)
    params = [torch.nn.Parameter(torch.randn(1 << 17))]
    opt = descentlab.NAdam(params, engine="auto")
    for _ in range(3):
        params[0].grad = torch.randn(1 << 17)
        opt.step()
    # (the kernel's entry may exist: it is looked up, never built)
    assert all(not k.ready and k._thread is None for k in kernels._KERNELS.values())
