"""The wrapper contract, for every wrapper and for chains of them.

Each wrapper must behave as an optimizer to everything that drives one:
descentlab schedules, torch's LR schedulers, GradScaler, hooks, state dicts
(nested, loadable into and from the unwrapped optimizer), copies.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch

import descentlab
from descentlab.schedules import CosineDecay, attach
from descentlab.wrappers import (
    SAM,
    GradientAccumulator,
    Lookahead,
    NonFiniteGuard,
    OptimizerWrapper,
    WithLineSearch,
    unwrap,
)
from tests.copies import HOWS, copy_by

WRAPPERS = {
    "guard": lambda o: NonFiniteGuard(o),
    "line_search": lambda o: WithLineSearch(o, "armijo"),
    "accumulation": lambda o: GradientAccumulator(o, 2),
    "guard(line_search)": lambda o: NonFiniteGuard(WithLineSearch(o)),
    "accumulation(guard)": lambda o: GradientAccumulator(NonFiniteGuard(o), 2),
    "guard(guard)": lambda o: NonFiniteGuard(NonFiniteGuard(o)),
    "sam": lambda o: SAM(_params(o), o),
    "lookahead": lambda o: Lookahead(o, k=2),
    "lookahead(sam)": lambda o: Lookahead(SAM(_params(o), o), k=2),
    "guard(lookahead)": lambda o: NonFiniteGuard(Lookahead(o, k=2)),
    "guard(sam)": lambda o: NonFiniteGuard(SAM(_params(o), o)),
}


def _params(opt):
    return [p for group in opt.param_groups for p in group["params"]]


def problem(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1))
    return model.double(), torch.randn(12, 4, dtype=torch.float64), torch.randn(
        12, 1, dtype=torch.float64)


def closure_for(opt, model, x, y):
    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return closure


def run(opt, model, x, y, steps):
    for _ in range(steps):
        opt.step(closure_for(opt, model, x, y))


class SlowAverage(OptimizerWrapper):
    """A wrapper written to the documented contract: per-parameter state (an average of
    the iterates) and a saved counter."""

    _saved_attributes = ("count",)

    def __init__(self, optimizer):
        super().__init__(optimizer)
        self.count = 0

    def step(self, closure=None):
        loss = self.optimizer.step(closure)
        self.count += 1
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    avg = self.state[p].setdefault("average", p.detach().clone())
                    avg.add_(p - avg, alpha=1.0 / self.count)
        return loss


@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_is_an_optimizer_sharing_the_inner_groups(name):
    model, x, y = problem()
    inner = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = WRAPPERS[name](inner)
    assert isinstance(opt, torch.optim.Optimizer) and unwrap(opt) is inner
    assert opt.param_groups is inner.param_groups and opt.defaults is inner.defaults
    ctrl = attach(opt, lr=CosineDecay(0.1, 10))  # descentlab's controller accepts it
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    run(opt, model, x, y, 2)
    ctrl.step()
    sched.step()
    assert inner.param_groups[0]["lr"] == pytest.approx(CosineDecay(0.1, 10)(1) * 0.5)
    extra = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt.add_param_group({"params": [extra], "lr": 0.01})
    assert inner.param_groups[-1]["params"][0] is extra
    assert repr(opt).startswith(type(opt).__name__ + "(")


@pytest.mark.parametrize("name", ["guard", "accumulation", "accumulation(guard)"])
def test_grad_scaler_drives_it(name):
    model, x, y = problem()
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    opt = WRAPPERS[name](inner)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        opt.zero_grad()
        scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
        scaler.step(opt)
        scaler.update()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_state_dict_nests_and_loads_back(name):
    model, x, y = problem()
    opt = WRAPPERS[name](torch.optim.Adam(model.parameters(), lr=0.01))
    run(opt, model, x, y, 4)
    sd = opt.state_dict()
    depth = name.count("(") + 1
    assert [e["type"] for e in sd["wrappers"]] == [
        type(o).__name__ for o in _chain(opt)][:depth]
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}  # the inner layout
    twin_model = copy.deepcopy(model)
    twin = WRAPPERS[name](torch.optim.Adam(twin_model.parameters(), lr=0.01))
    twin.load_state_dict(copy.deepcopy(sd))
    for a, b in zip(_chain(opt), _chain(twin), strict=True):
        for attr in type(a)._saved_attributes if isinstance(a, OptimizerWrapper) else ():
            assert getattr(a, attr) == getattr(b, attr), attr
    run(opt, model, x, y, 3)
    run(twin, twin_model, x, y, 3)
    for p, q in zip(model.parameters(), twin_model.parameters(), strict=True):
        assert torch.equal(p, q)


def _chain(opt):
    out = [opt]
    while isinstance(out[-1], OptimizerWrapper):
        out.append(out[-1].optimizer)
    return out


def test_state_dict_loads_into_and_from_the_unwrapped_optimizer():
    model, x, y = problem()
    guarded = NonFiniteGuard(WithLineSearch(torch.optim.Adam(model.parameters(), lr=0.01)))
    run(guarded, model, x, y, 3)
    plain = torch.optim.Adam(model.parameters(), lr=0.01)
    plain.load_state_dict(guarded.state_dict())  # torch ignores the "wrappers" entry
    assert int(plain.state_dict()["state"][0]["step"]) == 3
    fresh = NonFiniteGuard(WithLineSearch(torch.optim.Adam(model.parameters(), lr=0.01)))
    fresh.load_state_dict(plain.state_dict())  # no entries: the wrappers keep their own state
    assert int(fresh.optimizer.optimizer.state_dict()["state"][0]["step"]) == 3
    assert fresh.steps == 0
    other = WithLineSearch(NonFiniteGuard(torch.optim.Adam(model.parameters(), lr=0.01)))
    with pytest.raises(ValueError, match="saved by a 'NonFiniteGuard' wrapper"):
        other.load_state_dict(guarded.state_dict())


def test_per_parameter_state_of_a_new_wrapper_is_saved_by_index_and_cast():
    model, x, y = problem()
    opt = SlowAverage(torch.optim.SGD(model.parameters(), lr=0.1))
    run(opt, model, x, y, 3)
    sd = opt.state_dict()
    entry = sd["wrappers"][0]
    assert entry["type"] == "SlowAverage" and entry["attributes"] == {"count": 3}
    assert sorted(entry["state"]) == [0, 1, 2, 3]
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    twin_model = copy.deepcopy(model).float()
    twin = SlowAverage(torch.optim.SGD(twin_model.parameters(), lr=0.1))
    twin.load_state_dict(loaded)
    ps = list(twin_model.parameters())
    assert twin.count == 3 and all(twin.state[p]["average"].dtype == torch.float32 for p in ps)
    for p, q in zip(model.parameters(), ps, strict=True):
        torch.testing.assert_close(twin.state[q]["average"],
                                   opt.state[p]["average"].float())


@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_hooks_run_around_the_wrapper(name):
    model, x, y = problem()
    opt = WRAPPERS[name](torch.optim.SGD(model.parameters(), lr=0.1))
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append(("pre", o)))
    opt.register_step_post_hook(lambda o, a, k: calls.append(("post", o)))
    opt.register_state_dict_pre_hook(lambda o: calls.append(("sd_pre", o)))
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "tag": 1})
    opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append(("load_pre", o)))
    opt.register_load_state_dict_post_hook(lambda o: calls.append(("load_post", o)))
    opt.step(closure_for(opt, model, x, y))
    sd = opt.state_dict()
    assert sd["tag"] == 1
    opt.load_state_dict(sd)
    assert [c for c, _ in calls] == ["pre", "post", "sd_pre", "load_pre", "load_post"]
    assert all(o is opt for _, o in calls)
    assert not copy.deepcopy(opt)._optimizer_step_pre_hooks  # copies have no hooks, as torch's


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name", sorted(WRAPPERS) + ["slow_average"])
def test_copies_work_on_their_own_and_continue_identically(name, how):
    model, x, y = problem()
    make = WRAPPERS.get(name, SlowAverage)
    opt = make(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    torch.optim.lr_scheduler.StepLR(opt, 2)  # patches opt.step, as schedulers do
    run(opt, model, x, y, 2)
    twin = copy_by(opt, how)
    twin_params = [p for g in twin.param_groups for p in g["params"]]
    originals = list(model.parameters())
    assert all(a is not b and torch.equal(a, b)
               for a, b in zip(twin_params, originals, strict=True))
    run(opt, model, x, y, 3)
    names = [n for n, _ in model.named_parameters()]

    def twin_closure():  # the same model, evaluated at the copy's own parameters
        twin.zero_grad()
        out = torch.func.functional_call(model, dict(zip(names, twin_params, strict=True)), (x,))
        loss = torch.nn.functional.mse_loss(out, y)
        loss.backward()
        return loss

    for _ in range(3):
        twin.step(twin_closure)
    for p, q in zip(model.parameters(), twin_params, strict=True):
        assert torch.equal(p, q)


def test_public_attributes_are_read_from_the_inner_optimizer():
    model, _, _ = problem()
    opt = NonFiniteGuard(descentlab.Adam(model.parameters(), engine="reference"))
    assert opt.engine == "reference"  # an attribute of the inner optimizer
    with pytest.raises(AttributeError, match="no attribute '_hidden'"):
        opt._hidden  # noqa: B018


def test_the_base_has_no_step_and_refuses_a_non_optimizer():
    model, _, _ = problem()
    with pytest.raises(NotImplementedError, match="does not define step"):
        OptimizerWrapper(torch.optim.SGD(model.parameters(), lr=0.1)).step()
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        OptimizerWrapper(list(model.parameters()))


def test_state_dicts_of_the_first_wrapper_versions_still_load():
    model, x, y = problem()
    inner = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    guard = NonFiniteGuard(inner)
    old_guard = {**inner.state_dict(), "nonfinite_guard": {"skipped_steps": 2, "steps": 7}}
    guard.load_state_dict(old_guard)
    assert (guard.skipped_steps, guard.steps) == (2, 7)
    wls = WithLineSearch(torch.optim.SGD(model.parameters(), lr=0.1))
    old_wls = {"optimizer": wls.optimizer.state_dict(),
               "wrapper": {"func_evals": 5, "failures": 1, "fallbacks": 0, "last_step": 0.5}}
    wls.load_state_dict(old_wls)
    assert (wls.func_evals, wls.failures, wls.last_step) == (5, 1, 0.5)
