"""Aliases of parameters and gradients stay live under every engine, as with torch.optim.

Each loop runs the same code with torch.optim.SGD and with descentlab's SGD on
each engine; the results must agree to 1e-12 (float64), and the handles the
loop keeps must still be the parameters' own tensors at the end.
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
from torch import nn

import descentlab
from tests.engine.helpers import RICH

ENGINES = ["reference", "flat", "compiled", "auto"]
#: torch.optim.SGD's arguments; its compiled kernel is one CI compiles anyway.
SETTING = RICH["sgd"]


def _model(dtype: torch.dtype = torch.float64) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2)).to(dtype)


def _loss(model: nn.Module, step: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(step)
    dtype = next(model.parameters()).dtype
    x = torch.randn(8, 6, generator=gen, dtype=torch.float64).to(dtype)
    return model(x).pow(2).mean()


def _optimizer(engine: str | None, params) -> torch.optim.Optimizer:
    if engine is None:
        return torch.optim.SGD(params, **SETTING)
    return descentlab.SGD(params, engine=engine, **SETTING)


def _values(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _gradient_loop(engine: str | None, mode: str, steps: int = 12) -> tuple[torch.Tensor, bool]:
    """Train while keeping gradient handles; return the result and whether they stayed live."""
    model = _model()
    params = list(model.parameters())
    opt = _optimizer(engine, params)
    handles: list[torch.Tensor] | None = None
    if mode == "assign":  # gradient buffers of one's own, filled in place every step
        handles = [torch.zeros_like(p) for p in params]
        for p, g in zip(params, handles, strict=True):
            p.grad = g
    live = True
    for t in range(steps):
        if mode == "assign":
            for g, new in zip(handles, torch.autograd.grad(_loss(model, t), params), strict=True):
                g.copy_(new)
        else:
            opt.zero_grad(set_to_none=(mode == "fresh"))
            _loss(model, t).backward()
            if handles is None or mode == "fresh":
                handles = [p.grad for p in params]
        for g in handles:  # clip through the handles, as hand-written clipping does
            g.clamp_(-0.05, 0.05)
        opt.step()
        live = live and all(p.grad is g for p, g in zip(params, handles, strict=True))
    return _values(model), live


@pytest.mark.parametrize("mode", ["keep", "fresh", "assign"])
@pytest.mark.parametrize("engine", ENGINES)
def test_gradient_handles_stay_the_live_gradients(engine, mode):
    """``keep``: zero_grad(set_to_none=False) with handles from the first backward;
    ``fresh``: the default zero_grad, handles taken after each backward;
    ``assign``: gradient buffers of one's own assigned once to ``.grad``."""
    expected, torch_live = _gradient_loop(None, mode)
    ours, live = _gradient_loop(engine, mode)
    assert torch_live and live
    assert _rel_diff(ours, expected) <= 1e-12


def _gradient_versions(engine: str | None, steps: int = 6) -> list[list[int]]:
    """``p.grad._version`` after each step of a zero_grad(set_to_none=False) loop.

    The loop keeps no handle, so the flat engines move each gradient into their
    buffer at its second step (by then two copies into the slot, four writes to
    the gradient); a step must also leave the gradient's values alone.
    """
    model = _model()
    params = list(model.parameters())
    opt = _optimizer(engine, params)
    seen = []
    for t in range(steps):
        opt.zero_grad(set_to_none=False)
        _loss(model, t).backward()
        nn.utils.clip_grad_value_(params, 0.05)  # in place: one more version per step
        values = [p.grad.clone() for p in params]
        opt.step()
        assert all(torch.equal(p.grad, v) for p, v in zip(params, values, strict=True))
        seen.append([p.grad._version for p in params])
    return seen


@pytest.mark.parametrize("engine", ENGINES)
def test_a_step_never_bumps_the_gradients_version(engine):
    """torch.optim never writes into a gradient, so only backward and zero_grad bump
    its version; a gradient moved into a flat buffer must carry on from the same count."""
    assert _gradient_versions(engine) == _gradient_versions(None)


def _parameter_alias_loop(engine: str | None, steps: int = 8) -> tuple[torch.Tensor, bool]:
    model = _model()
    opt = _optimizer(engine, model.parameters())
    weight = model[0].weight.detach()  # taken after the optimizer was built
    saved = model.state_dict()  # a state dict held in memory aliases the parameters too
    for t in range(steps):
        opt.zero_grad()
        _loss(model, t).backward()
        opt.step()
        if t == 3:
            with torch.no_grad():
                weight.mul_(0.5)  # writing through the alias reaches the parameter
    live = weight.data_ptr() == model[0].weight.data_ptr() and all(
        torch.equal(saved[k], v) for k, v in model.state_dict().items()
    )
    return _values(model), live


@pytest.mark.parametrize("engine", ENGINES)
def test_parameter_aliases_taken_after_construction_stay_live(engine):
    expected, torch_live = _parameter_alias_loop(None)
    ours, live = _parameter_alias_loop(engine)
    assert torch_live and live
    assert _rel_diff(ours, expected) <= 1e-12


def _flat_layout(opt):
    return opt._engine.layout(opt, opt.param_groups[0])


def test_alias_taken_before_construction_stays_live_with_one_warning():
    model = _model()
    weight = model[0].weight.detach()
    opt = descentlab.SGD(model.parameters(), engine="flat", **SETTING)
    reference = _model()
    ref_opt = torch.optim.SGD(reference.parameters(), **SETTING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for t in range(4):
            for m, o in ((model, opt), (reference, ref_opt)):
                o.zero_grad()
                _loss(m, t).backward()
                o.step()
    messages = [str(w.message) for w in caught if "share their memory" in str(w.message)]
    assert len(messages) == 1 and "(5, 6)" in messages[0]
    assert weight.data_ptr() == model[0].weight.data_ptr()
    assert _flat_layout(opt).waiting == [model[0].weight]
    del weight  # released: the parameter joins a flat buffer at the next step
    for t in range(4, 8):
        for m, o in ((model, opt), (reference, ref_opt)):
            o.zero_grad()
            _loss(m, t).backward()
            o.step()
    layout = _flat_layout(opt)
    assert not layout.waiting and not layout.fallback
    assert sum(len(b.params) for b in layout.buckets) == 4
    assert _rel_diff(_values(model), _values(reference)) <= 1e-12


def _saved_bytes(obj) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return len(buffer.getvalue())


@pytest.mark.parametrize("engine", ENGINES)
def test_saving_a_sub_module_costs_its_own_bytes(engine):
    torch.manual_seed(0)
    layers = nn.Sequential(*[nn.Linear(256, 256) for _ in range(8)]).double()
    own = _saved_bytes(layers[3].state_dict())
    own_weight = _saved_bytes(layers[3].weight)
    whole = len(pickle.dumps(layers))
    opt = _optimizer(engine, layers.parameters())
    layers(torch.randn(4, 256, dtype=torch.float64)).pow(2).mean().backward()
    opt.step()
    assert _saved_bytes(layers[3].state_dict()) <= 1.02 * own
    assert _saved_bytes(layers[3].weight) <= 1.02 * own_weight
    assert _saved_bytes(layers[3].weight.grad) <= 1.02 * own_weight
    assert len(pickle.dumps(layers)) <= 1.02 * whole
    state = opt.state[layers[3].weight]
    assert _saved_bytes(state["momentum_buffer"]) <= 1.02 * own_weight
    torch_opt = _optimizer(None, layers.parameters())
    torch_opt.step()
    assert _saved_bytes(opt.state_dict()) <= 1.02 * _saved_bytes(torch_opt.state_dict())


def test_model_moved_to_another_dtype_is_laid_out_again_and_new_aliases_stay_live():
    results = {}
    for engine in ("reference", "flat"):
        model = _model(torch.float32)
        opt = descentlab.SGD(model.parameters(), engine=engine, **SETTING)
        for t in range(6):
            if t == 2:
                model.double()
                weight = model[0].weight.detach()  # an alias of the new float64 weight
            opt.zero_grad()
            _loss(model, t).backward()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the waiting alias
                opt.step()
        assert weight.data_ptr() == model[0].weight.data_ptr()
        results[engine] = (_values(model), opt)
    layout = _flat_layout(results["flat"][1])
    assert layout.waiting == [model[0].weight]  # it waits; the others moved to float64
    assert [(b.dtype, len(b.params)) for b in layout.buckets] == [(torch.float64, 3)]
    # the flat state was cast to float64 with the parameters (the reference keeps float32)
    assert _rel_diff(results["flat"][0], results["reference"][0]) <= 1e-6


def test_model_to_its_own_dtype_moves_nothing():
    model = _model()
    opt = descentlab.SGD(model.parameters(), engine="flat", **SETTING)
    (bucket,) = _flat_layout(opt).buckets
    weight = model[0].weight.detach()
    model.to(torch.float64)
    _loss(model, 0).backward()
    opt.step()
    assert _flat_layout(opt).buckets == [bucket]
    assert weight.data_ptr() == model[0].weight.data_ptr()


@pytest.mark.skipif(
    descentlab.SGD.__setstate__ is torch.optim.Optimizer.__setstate__,
    reason="needs RuleOptimizer.__setstate__ (rebuilds the engine and calls its prepare)",
)
@pytest.mark.parametrize("engine", ["flat", "auto"])
def test_deep_copy_of_model_and_optimizer_continues_independently(engine):
    def run(model, opt, steps):
        for t in steps:
            opt.zero_grad()
            _loss(model, t).backward()
            opt.step()

    straight = _model()
    run(straight, descentlab.SGD(straight.parameters(), engine=engine, **SETTING), range(8))
    model = _model()
    opt = descentlab.SGD(model.parameters(), engine=engine, **SETTING)
    run(model, opt, range(4))
    model2, opt2 = copy.deepcopy((model, opt))
    run(model2, opt2, range(4, 8))
    run(model, opt, range(4, 8))
    assert torch.equal(_values(model2), _values(straight))
    assert torch.equal(_values(model), _values(straight))
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert p.untyped_storage().data_ptr() != q.untyped_storage().data_ptr()
        assert q.untyped_storage().nbytes() == q.numel() * q.element_size()
    assert not _flat_layout(opt2).fallback  # the copy is in flat buffers of its own


def test_parameters_in_shared_memory_stay_there():
    results = []
    for engine in ("reference", "flat"):
        model = _model()
        model.share_memory()  # Hogwild: other processes see these parameters
        opt = descentlab.SGD(model.parameters(), engine=engine, **SETTING)
        for t in range(3):
            opt.zero_grad()
            _loss(model, t).backward()
            opt.step()
        assert all(p.is_shared() for p in model.parameters())
        results.append(_values(model))
    assert torch.equal(*results)


def test_meta_parameters_are_not_flattened():
    p = nn.Parameter(torch.empty(4, 3, device="meta"))
    opt = descentlab.Adam([p], engine="flat")
    layout = _flat_layout(opt)
    assert layout.fallback == [p] and not layout.buckets and not layout.waiting


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_ddp_matches_torch_in_both_bucket_modes(tmp_path):
    """Two gloo ranks on 127.0.0.1: every engine equals torch.optim and leaves DDP's gradients.

    In ``gradient_as_bucket_view`` mode ``.grad`` is a view of DDP's bucket, so
    it is not private: the engines copy it in and leave it where it is.
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.engine.ddp_ranks import ENGINES as DDP_ENGINES

    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    outs = [tmp_path / f"rank{r}.pt" for r in range(2)]
    ranks = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.engine.ddp_ranks",
                str(r),
                "2",
                str(tmp_path / "init"),
                str(outs[r]),
            ],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    try:
        logs = [rank.communicate(timeout=600)[0] for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    assert [rank.returncode for rank in ranks] == [0, 0], logs
    for out in outs:
        results = torch.load(out)
        for bucket_view in (False, True):
            for set_to_none in (True, False):
                expected, torch_kept = results[(bucket_view, set_to_none, None)]
                for engine in DDP_ENGINES:
                    ours, kept = results[(bucket_view, set_to_none, engine)]
                    where = (bucket_view, set_to_none, engine)
                    assert _rel_diff(ours, expected) <= 1e-12, where
                    if bucket_view:  # .grad is DDP's view of its bucket: it must stay so
                        assert torch_kept and kept, where


def test_a_replaced_parameter_list_is_laid_out_again():
    model = _model()
    opt = descentlab.SGD(model.parameters(), engine="flat", **SETTING)
    opt.param_groups[0]["params"] = list(model.parameters())  # a new list, same parameters
    reference = _model()
    ref_opt = torch.optim.SGD(reference.parameters(), **SETTING)
    for t in range(3):
        for m, o in ((model, opt), (reference, ref_opt)):
            o.zero_grad()
            _loss(m, t).backward()
            o.step()
    layout = _flat_layout(opt)
    assert not layout.fallback and sum(len(b.params) for b in layout.buckets) == 4
    assert _rel_diff(_values(model), _values(reference)) <= 1e-12


@pytest.mark.parametrize("engine", ENGINES)
def test_a_parameter_replaced_in_the_group_list_is_stepped_instead_of_the_old_one(engine):
    """``param_groups[0]["params"][1] = new`` (same list, same length): torch.optim steps the
    new parameter from fresh state and leaves the old one; so must every engine."""
    results = []
    for cls, extra in ((torch.optim.Adam, {}), (descentlab.Adam, {"engine": engine})):
        gen = torch.Generator().manual_seed(0)
        params = [nn.Parameter(torch.randn(300, generator=gen, dtype=torch.float64))
                  for _ in range(3)]
        new = nn.Parameter(torch.randn(300, generator=gen, dtype=torch.float64))
        opt = cls(params, lr=0.1, **extra)
        for t in range(5):
            if t == 3:
                opt.param_groups[0]["params"][1] = new
            for i, p in enumerate(opt.param_groups[0]["params"]):
                p.grad = torch.full_like(p, 0.5 + i + t)
            opt.step()
        results.append([p.detach().clone() for p in (*params, new)])
    (expected, ours) = results
    for e, o in zip(expected, ours, strict=True):
        assert torch.allclose(o, e, rtol=1e-12, atol=0), (engine, (o - e).abs().max())
