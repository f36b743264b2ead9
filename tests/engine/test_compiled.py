"""The compiled and auto engines: parity, no recompilation, the scalar split, the auto policy."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

import descentlab
from descentlab.engine import auto as auto_module
from descentlab.engine import describe, kernels
from tests.engine.helpers import loss, rel_diff, train
from tests.optim.engines import CI_COMPILED_SUBSET
from tests.optim.helpers import max_rel_diff


@pytest.mark.parametrize("name", CI_COMPILED_SUBSET)
def test_compiled_training_matches_reference(name):
    ref, _ = train(name, "reference", zero_grad="assign")
    ours, _ = train(name, "compiled", zero_grad="assign")
    assert rel_diff(ours, ref) <= 1e-12


def test_compiled_float32_matches_reference():
    ref, _ = train("nadam", "reference", dtype=torch.float32)
    ours, _ = train("nadam", "compiled", dtype=torch.float32)
    assert rel_diff(ours, ref) <= 1e-6


def test_no_recompilation_when_hyperparameters_step_or_sizes_change():
    torch.manual_seed(0)
    params = [torch.randn(n, dtype=torch.float64, requires_grad=True) for n in (10, 300, 7)]
    opt = descentlab.NAdam(params, lr=0.1, engine="compiled")
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    with torch.compiler.set_stance("fail_on_recompile"):
        for t in range(6):
            for j, p in enumerate(params):  # alternating idle parameters split the buffer in runs
                p.grad = None if (t + j) % 2 else torch.randn_like(p)
            group = opt.param_groups[0]
            group["lr"] = 0.1 / (t + 1)
            group["betas"] = (0.8 + 0.01 * t, 0.99)
            group["momentum_decay"] = 0.004 * (t + 1)
            opt.step()
        other = [torch.randn(12345, dtype=torch.float64, requires_grad=True)]
        opt2 = descentlab.NAdam(other, lr=0.3, engine="compiled")
        other[0].grad = torch.ones_like(other[0])
        for _ in range(3):
            opt2.step()


@pytest.mark.parametrize("engine", ["compiled", "auto"])
def test_structural_changes_between_steps_take_their_kernel(engine, monkeypatch):
    """The kernel found again for the same buffer is rechecked: maximize, weight decay on and
    off, and decoupled decay changed between steps step as torch does."""
    monkeypatch.setenv("DESCENTLAB_TORCH_FUSED", "0")  # the compiled kernels, not torch's
    torch.manual_seed(0)
    master = [torch.randn(40_000, dtype=torch.float64) for _ in range(3)]
    ours = [m.clone().requires_grad_() for m in master]
    ref = [m.clone().requires_grad_() for m in master]
    opt = descentlab.Adam(ours, lr=0.01, weight_decay=0.1, engine=engine)
    torch_opt = torch.optim.Adam(ref, lr=0.01, weight_decay=0.1)
    changes = [{}, {}, {"maximize": True}, {"weight_decay": 0.0}, {"weight_decay": 0.1},
               {"decoupled_weight_decay": True},
               {"maximize": False}, {}]
    for t, change in enumerate(changes):
        gen = torch.Generator().manual_seed(t)
        for p, q in zip(ours, ref, strict=True):
            g = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.grad, q.grad = g, g.clone()
        for optimizer in (opt, torch_opt):
            optimizer.param_groups[0].update(change)
        if engine == "auto":
            for kernel in kernels._KERNELS.values():
                kernel.wait(600)
        opt.step()
        torch_opt.step()
        assert max_rel_diff(ours, ref) <= 1e-12, (t, change)


def test_scalar_expressions_are_split_out_of_the_elementwise_loop():
    net, opt = train("radam", "compiled", steps=2)
    run = describe(opt, opt.param_groups[0])
    flags = tuple(sorted(run.flags.items()))
    (kernel,) = [  # this run's kernel (other tests in the process may have built other RAdams)
        k for k in kernels._KERNELS.values()
        if k.key[0] == "RAdamRule" and k.dtype == torch.float64 and k.key[2:4] == (
            flags, run.maximize)
    ]
    elementwise = {
        n.target for n in kernel._elementwise_module.graph.nodes if n.op == "call_function"
    }
    scalar = {n.target for n in kernel._scalar_part.graph.nodes if n.op == "call_function"}
    assert any("pow" in str(t) for t in scalar)
    assert not any("pow" in str(t) for t in elementwise)
    assert kernel.compile_seconds is not None and kernel.compile_seconds > 0
    assert not torch._dynamo.utils.counters["graph_break"]  # one graph per kernel


def test_cache_directory_is_stable_and_overridable(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("DESCENTLAB_CACHE_DIR", str(tmp_path))
    assert kernels.cache_dir() == tmp_path / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "explicit"))
    assert kernels.cache_dir() == tmp_path / "explicit"


def _big_problem(n: int = 64) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    torch.manual_seed(2)
    params = [torch.randn(n, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    return params, descentlab.Adadelta(params, lr=0.5, engine="auto")


def test_auto_stays_eager_below_the_threshold():
    params, opt = _big_problem()
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    kernel = opt._engine.kernel_for(
        describe(opt, opt.param_groups[0]),
        params[0],
        {"square_avg": 0, "acc_delta": 0},
        {},
    )
    assert kernel._thread is None


def test_auto_compiles_in_the_background_then_switches(monkeypatch):
    monkeypatch.setattr(auto_module, "COMPILE_THRESHOLD", 16)
    monkeypatch.setattr(kernels, "_KERNELS", {})  # only this test's kernel, built here
    ref_params = [p.detach().clone().requires_grad_() for p in _big_problem()[0]]
    ref = descentlab.Adadelta(ref_params, lr=0.5, engine="reference")
    params, opt = _big_problem()
    used = []
    for t in range(40):
        for p, q in zip(params, ref_params, strict=True):
            p.grad = torch.cos(p.detach() * (t + 1))
            q.grad = torch.cos(q.detach() * (t + 1))
        kernel = (
            next(
                k
                for k in kernels._KERNELS.values()
                if k.key[0] == "AdadeltaRule" and k.dtype == torch.float64
            )
            if t
            else None
        )
        used.append(bool(kernel and kernel.ready))
        opt.step()
        ref.step()
        if t == 1:
            assert kernel.wait(timeout=300)
    assert used[2] and not used[0]
    for p, q in zip(params, ref_params, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-12, atol=0)


def test_auto_keeps_eager_and_warns_once_when_compiling_fails(monkeypatch):
    monkeypatch.setattr(auto_module, "COMPILE_THRESHOLD", 16)

    def broken(self):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(kernels.Kernel, "_trace_and_compile", broken)
    monkeypatch.setattr(kernels, "_KERNELS", {})
    params, opt = _big_problem()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for t in range(4):
            for p in params:
                p.grad = torch.ones_like(p) * t
            opt.step()
            for k in kernels._KERNELS.values():
                k.wait(timeout=60)
    messages = [str(w.message) for w in caught if "compiling" in str(w.message)]
    assert len(messages) == 1 and "no compiler here" in messages[0]


def test_auto_can_be_told_never_to_compile(monkeypatch):
    monkeypatch.setattr(auto_module, "COMPILE_THRESHOLD", 16)
    monkeypatch.setenv("DESCENTLAB_AUTO_COMPILE", "0")
    monkeypatch.setattr(kernels, "_KERNELS", {})
    params, opt = _big_problem()
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert not kernels._KERNELS


def test_default_engine_is_auto_and_matches_reference_on_small_models(monkeypatch):
    net, opt = train("adam", "auto")  # torch's fused Adam kernel on the flat buffer
    ref, _ = train("adam", "reference")
    assert opt.engine == "auto"
    assert rel_diff(net, ref) <= 1e-12
    monkeypatch.setenv("DESCENTLAB_TORCH_FUSED", "0")
    net, _ = train("adam", "auto")  # eager on flat buffers: the reference's bits
    assert rel_diff(net, ref) == 0.0
    assert descentlab.Adam([torch.zeros(1, requires_grad=True)]).engine == "auto"


def test_model_zero_grad_and_backward_with_compiled_engine():
    net, _ = train("adam", "compiled", zero_grad="model")
    ref, _ = train("adam", "reference", zero_grad="model")
    assert rel_diff(net, ref) <= 1e-12
    assert loss(net, 0).isfinite()


def test_background_compile_leaves_the_global_random_state_alone(monkeypatch):
    monkeypatch.setattr(auto_module, "COMPILE_THRESHOLD", 16)
    monkeypatch.setattr(kernels, "_KERNELS", {})
    params, opt = _big_problem()
    for p in params:
        p.grad = torch.ones_like(p)
    state = torch.get_rng_state()
    opt.step()
    for k in kernels._KERNELS.values():
        assert k.wait(timeout=300)
    assert torch.equal(torch.get_rng_state(), state)


def test_process_exits_cleanly_while_a_background_compile_runs(tmp_path):
    import subprocess
    import sys

    child = (
        "import torch, descentlab\n"
        "ps = [torch.zeros(1 << 18, requires_grad=True) for _ in range(4)]\n"
        "for p in ps:\n"
        "    p.grad = torch.ones_like(p)\n"
        "descentlab.RAdam(ps, weight_decay=0.25, engine='auto').step()\n"
        "print('stepped')\n"
    )
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}  # cold: still compiling
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stepped" in done.stdout and "terminate called" not in done.stderr


def test_kernels_run_inductors_call_directly_with_the_wrapped_bits():
    """The generated ``call`` runs without AOTAutograd's wrapper once :func:`direct_call`
    checked it; the results are the wrapped call's bit for bit, and the parameter buffer's
    and the state's versions count the update."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(300)) for _ in range(3)]
    opt = descentlab.RAdam(params, engine="compiled", weight_decay=0.1)
    for p in params:
        p.grad = torch.randn(300)
    opt.step()
    (kernel,) = [k for k in kernels._KERNELS.values() if k.rule.name == "radam"
                 and k.dtype == torch.float32 and k.flags["weight_decay"] == "coupled"]
    assert kernel._direct is not None
    gen = torch.Generator().manual_seed(1)
    buffers = [torch.randn(1000, generator=gen) for _ in range(2 + len(kernel.state_keys))]
    buffers[3].abs_()  # exp_avg_sq
    coefficients = kernel._run_scalar_part(torch.device("cpu"), {}, opt.rule_for(
        opt.param_groups[0]).scalars(opt.param_groups[0]), 7)
    copies = [b.clone() for b in buffers]
    versions = [b._version for b in buffers]
    kernel._run_elementwise(buffers, coefficients)
    kernel._elementwise(*copies, coefficients)
    assert all(map(torch.equal, buffers, copies))
    assert [b._version > v for b, v in zip(buffers, versions, strict=True)] == [
        True, False, *[True] * len(kernel.state_keys)]


def test_direct_call_is_refused_where_it_would_differ():
    def wrapped(x, coefficients):
        x.add_(1)

    buffers, coefficients = [torch.zeros(5)], torch.zeros(0)
    assert kernels.direct_call(wrapped, buffers, coefficients) is None  # no generated call
    wrapped.current_callable = lambda args: (args[0] + 1,)  # returns instead of writing
    assert kernels.direct_call(wrapped, buffers, coefficients) is None
    wrapped.current_callable = lambda args: (args[0].add_(2), None)[1:]  # other bits
    assert kernels.direct_call(wrapped, buffers, coefficients) is None
    wrapped.current_callable = lambda args: (args[0].add_(1), None)[1:]
    assert kernels.direct_call(wrapped, buffers, coefficients) is wrapped.current_callable
