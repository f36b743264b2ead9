"""A background compile must leave code running in other threads alone.

``engine="auto"`` compiles kernels in a background thread while the main
thread keeps training. Anything process-wide the compiler switches on is seen
by that training: torch.optim's optimizers branch on
``torch.compiler.is_compiling()`` (foreach Adamax fails outright on its
compile-time path), and inductor saves and restores the global random state
around a compile. The test builds a kernel for real (inductor's graph caches
off, so it is traced, lowered and generated again) and steps torch.optim
optimizers and draws random numbers in the main thread meanwhile.
"""

from __future__ import annotations

import time

import torch
import torch._functorch.config
import torch._inductor.config

import descentlab
from descentlab.engine import auto as auto_module
from descentlab.engine import kernels

#: torch.optim implementations whose code paths branch on ``is_compiling()``
TORCH_OPTIMIZERS = {
    "adamax-foreach": lambda ps: torch.optim.Adamax(ps, lr=0.01, foreach=True),
    "adam-foreach": lambda ps: torch.optim.Adam(ps, lr=0.01, foreach=True),
    "adam-fused": lambda ps: torch.optim.Adam(ps, lr=0.01, fused=True),
    "adamw-forloop": lambda ps: torch.optim.AdamW(ps, lr=0.01, foreach=False),
    "nadam-foreach": lambda ps: torch.optim.NAdam(ps, lr=0.01, foreach=True),
    "radam-foreach": lambda ps: torch.optim.RAdam(ps, lr=0.01, foreach=True),
    "rmsprop-foreach": lambda ps: torch.optim.RMSprop(ps, lr=0.01, foreach=True),
    "sgd-foreach": lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, foreach=True),
}


def _torch_steps() -> dict[str, list[torch.Tensor]]:
    """Three steps of each torch optimizer on fixed tensors (no random draws)."""
    out = {}
    for name, make in TORCH_OPTIMIZERS.items():
        params = [torch.linspace(-1, 1, n).requires_grad_() for n in (5, 33)]
        opt = make(params)
        for t in range(3):
            for p in params:
                p.grad = torch.cos(p.detach() * (t + 2))
            opt.step()
        out[name] = [p.detach().clone() for p in params]
    return out


def test_torch_optim_in_the_main_thread_is_unaffected_by_a_background_compile(monkeypatch):
    expected = _torch_steps()  # no compile running
    monkeypatch.setattr(auto_module, "COMPILE_THRESHOLD", 16)
    monkeypatch.setattr(kernels, "_KERNELS", {})
    # no graph caches: the kernel is traced, lowered and generated again (the C++ build of the
    # generated source may come from the disk cache)
    with (
        torch._inductor.config.patch(fx_graph_cache=False),
        torch._functorch.config.patch(enable_autograd_cache=False),
    ):
        _step_torch_while_building(expected)


def _step_torch_while_building(expected: dict[str, list[torch.Tensor]]) -> None:
    params = [torch.ones(40, requires_grad=True) for _ in range(2)]
    for p in params:
        p.grad = torch.full_like(p, 0.5)
    descentlab.RAdam(params, weight_decay=0.125, engine="auto").step()
    (kernel,) = kernels._KERNELS.values()
    rng = torch.get_rng_state()
    during = draws = 0
    while not kernel.ready and kernel.error is None:
        assert not torch.compiler.is_compiling()
        drawn = torch.rand(3)  # the build must neither draw from nor rewind the global generator
        draws += 1
        got = _torch_steps()
        during += not kernel.ready
        time.sleep(0.02)  # leave the build most of the interpreter
        for name, tensors in expected.items():
            for a, b in zip(got[name], tensors, strict=True):
                assert torch.equal(a, b), name
    assert kernel.wait(timeout=600) and kernel.error is None, kernel.error
    assert during >= 1  # the steps above really ran while the kernel was being built
    torch.set_rng_state(rng)
    replay = [torch.rand(3) for _ in range(draws)]
    assert torch.equal(replay[-1], drawn)


def test_profiler_still_sees_each_step_under_torchs_name():
    params = [torch.zeros(4, requires_grad=True)]
    opt = descentlab.Adam(params)
    params[0].grad = torch.ones(4)
    opt.step()  # outside a profiler: no record_function range (see RuleOptimizer.profile_hook_step)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    names = [e.name for e in prof.events()]
    assert names.count("Optimizer.step#Adam.step") == 1
