"""ScheduleController / attach: any hyperparameter, per group, exact resume, torch protocol."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as L

import descentlab
from descentlab.schedules import (
    CosineDecay,
    ExponentialDecay,
    LambdaSchedule,
    LinearSchedule,
    ReduceOnPlateau,
    ScheduleController,
    StepDecay,
    Warmup,
    attach,
    one_cycle_momentum,
    warmup_cosine,
)
from tests.copies import HOWS, copy_by


def params(n=3, dtype=torch.float64):
    return [torch.nn.Parameter(torch.ones(n, dtype=dtype))]


def test_attach_writes_step_zero_then_each_step():
    opt = torch.optim.SGD(params(), lr=1.0, momentum=0.9)
    sched = CosineDecay(0.5, 20)
    ctrl = attach(opt, lr=sched)
    assert opt.param_groups[0]["lr"] == sched(0)
    for t in range(1, 30):
        opt.step()
        ctrl.step()
        assert opt.param_groups[0]["lr"] == sched(t)
        assert ctrl.get_last_lr() == [sched(t)]
        assert ctrl.last_epoch == t


def test_every_hyperparameter_and_per_group():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    opt = torch.optim.AdamW(
        [{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": 0.01}],
        lr=0.1,
    )
    lr0, lr1 = CosineDecay(0.1, 50), StepDecay(0.01, 10, 0.5)
    wd, b1, b2 = LinearSchedule(0.0, 0.1, 30), one_cycle_momentum(60), LinearSchedule(0.9, 0.99, 40)
    ctrl = ScheduleController(
        opt, [{"lr": lr0, "beta1": b1}, {"lr": lr1, "weight_decay": wd, "betas[1]": b2}]
    )
    for t in range(60):
        g0, g1 = opt.param_groups
        assert (g0["lr"], g0["betas"][0]) == (lr0(t), b1(t))
        assert g0["weight_decay"] == 0.01 and g0["betas"][1] == 0.999  # not scheduled
        assert (g1["lr"], g1["weight_decay"], g1["betas"][1]) == (lr1(t), wd(t), b2(t))
        assert g1["betas"][0] == 0.9
        assert isinstance(g0["betas"], tuple)
        ctrl.step()
    assert ctrl.get_last_values("beta1")[0] == b1(60)


def test_relative_mode_matches_torch_lambda_lr_per_group():
    """Relative schedules are factors of each group's own lr, as LambdaLR's lambdas."""
    lambdas = [lambda t: 0.99**t, lambda t: 1.0 / (1 + 0.1 * t)]

    def make_opt():
        ps = params(2) + params(2)
        return torch.optim.SGD([{"params": ps[0]}, {"params": ps[1], "lr": 0.03}], lr=0.2)

    ref_opt, opt = make_opt(), make_opt()
    ref = L.LambdaLR(ref_opt, lambdas)
    ctrl = ScheduleController(opt, [{"lr": LambdaSchedule(f)} for f in lambdas], relative=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(1000):
            np.testing.assert_allclose(ctrl.get_last_lr(), ref.get_last_lr(), rtol=1e-15)
            ref_opt.step()
            opt.step()
            ref.step()
            ctrl.step()


def test_tensor_hyperparameters_updated_in_place():
    lr = torch.tensor(0.01)
    opt = torch.optim.Adam(params(dtype=torch.float32), lr=lr)
    ctrl = attach(opt, lr=ExponentialDecay(0.01, 0.5))
    ctrl.step()
    ctrl.step()
    assert opt.param_groups[0]["lr"] is lr
    assert lr.item() == pytest.approx(0.0025)


def test_new_param_groups_follow_shared_schedules():
    opt = torch.optim.SGD(params(), lr=0.1)
    ctrl = attach(opt, lr=StepDecay(1.0, 2), relative=True)  # factor 1, then 0.1 from step 2
    opt.add_param_group({"params": params(), "lr": 1.0})
    ctrl.step()
    assert ctrl.get_last_lr() == [0.1, 1.0]
    ctrl.step()
    assert ctrl.get_last_lr() == pytest.approx([0.01, 0.1], rel=1e-15)


def test_is_a_torch_lr_scheduler_and_drives_like_one():
    """A loop written against the LRScheduler API alone (as trainers are) drives it."""
    opt = torch.optim.SGD(params(), lr=0.1, momentum=0.9)
    sched = warmup_cosine(0.1, 10, 100)
    ctrl = attach(opt, lr=sched, momentum=one_cycle_momentum(100))

    def generic_trainer(scheduler: L.LRScheduler, steps: int) -> list[float]:
        assert isinstance(scheduler, L.LRScheduler)
        seen = []
        for _ in range(steps):
            scheduler.optimizer.step()
            scheduler.step()
            seen.append(scheduler.get_last_lr()[0])
        return seen

    seen = generic_trainer(ctrl, 99)
    assert seen == [sched(t) for t in range(1, 100)]
    assert ctrl.get_lr() == [sched(99)]


def test_lightning_style_plateau_step_with_metric():
    """Lightning calls ``scheduler.step(monitor_value)`` for plateau-type schedulers."""
    opt = torch.optim.SGD(params(), lr=0.1)
    ctrl = attach(opt, lr=ReduceOnPlateau(0.1, factor=0.5, patience=0))
    ctrl.step(torch.tensor(1.0))
    ctrl.step(torch.tensor(2.0))
    assert ctrl.get_last_lr() == [0.05]


def _train(opt_name, ctrl_factory, steps, start=0, state=None):
    """Train a small float64 regression; return (lrs, betas/momenta, final params, states)."""
    torch.manual_seed(0)
    x = torch.randn(64, 5, dtype=torch.float64)
    y = x @ torch.arange(1.0, 6.0, dtype=torch.float64) + 0.1
    model = torch.nn.Linear(5, 1).double()
    opt = descentlab.make_optimizer(opt_name, model.parameters(), lr=0.05)
    ctrl = ctrl_factory(opt)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        ctrl.load_state_dict(state["ctrl"])
    lrs = []
    for t in range(start, steps):
        lrs.append(dict(opt.param_groups[0]))
        lrs[-1].pop("params")
        loss = torch.nn.functional.mse_loss(model(x).squeeze(-1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        # a "validation" metric every 3 steps that stops improving at step 15
        metric = 1.0 / (1.0 + min(t, 15)) if t % 3 == 2 else None
        ctrl.step(metric)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "ctrl": ctrl.state_dict()},
               buf)
    buf.seek(0)
    return lrs, [p.detach().clone() for p in model.parameters()], torch.load(buf)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_exact_resume_equals_uninterrupted_run(opt_name):
    def factory(opt):
        key = "momentum" if opt_name == "sgd" else "beta1"
        if opt_name == "sgd":
            opt.param_groups[0]["momentum"] = 0.9
        lr = Warmup(ReduceOnPlateau(CosineDecay(0.05, 60), factor=0.5, patience=1), 8)
        return attach(opt, lr=lr, **{key: one_cycle_momentum(70)}, weight_decay=0.001)

    full_lrs, full_params, _ = _train(opt_name, factory, 70)
    first_lrs, _, state = _train(opt_name, factory, 33)
    assert state["ctrl"]["schedules"][0]["children"][0]["num_reductions"] >= 1
    rest_lrs, resumed_params, _ = _train(opt_name, factory, 70, start=33, state=state)
    assert first_lrs + rest_lrs == full_lrs  # every hyperparameter, every step, bit for bit
    assert len({d["lr"] for d in full_lrs}) > 40
    for a, b in zip(full_params, resumed_params, strict=True):
        assert torch.equal(a, b)


def test_our_optimizer_uses_the_scheduled_values():
    """descentlab.Adam reads lr and beta1 from the groups each step: compare with torch.Adam."""
    ps_ours, ps_ref = params(4), params(4)
    ours = descentlab.Adam(ps_ours, lr=0.1)
    ref = torch.optim.Adam(ps_ref, lr=0.1)
    ctrl = attach(ours, lr=ExponentialDecay(0.1, 0.9), beta1=LinearSchedule(0.5, 0.9, 5))
    for t in range(8):
        for p in (*ps_ours, *ps_ref):
            p.grad = torch.sin(p.detach() * (t + 1))
        ref.param_groups[0]["lr"] = ExponentialDecay(0.1, 0.9)(t)
        ref.param_groups[0]["betas"] = (LinearSchedule(0.5, 0.9, 5)(t), 0.999)
        ours.step()
        ref.step()
        ctrl.step()
        torch.testing.assert_close(ps_ours[0], ps_ref[0], rtol=1e-12, atol=1e-14)


def test_errors_are_clear():
    opt = torch.optim.SGD(params(), lr=0.1)
    with pytest.raises(ValueError, match="param group 0 has no hyperparameter 'betas\\[0\\]'"):
        attach(opt, beta1=0.9)
    with pytest.raises(ValueError, match="2 entries but the optimizer has 1"):
        ScheduleController(opt, [{"lr": 0.1}, {"lr": 0.2}])
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        attach("not an optimizer", lr=0.1)
    with pytest.raises(ValueError, match="at least one schedule"):
        attach(opt)
    with pytest.raises(ValueError, match="same hyperparameter twice: 'betas\\[0\\]'"):
        ScheduleController(torch.optim.Adam(params()), {"beta1": 0.9, "betas[0]": 0.8})
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['lr'\] at step 3"):
        ctrl = attach(opt, lr=LambdaSchedule(lambda t: 0.1 - 0.05 * t))
        for _ in range(3):
            ctrl.step()
    adam = torch.optim.Adam(params(), lr=0.1)
    ctrl = attach(adam, beta1=LinearSchedule(0.9, 1.0, 2))
    ctrl.step()
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['betas\[0\]'\] at step 2 must be in"):
        ctrl.step()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # emitted inside torch.compile
def test_compiled_engine_takes_new_values_without_recompiling():
    """descentlab's compiled engine reads lr and betas from the groups: no new graph per value.

    (weight_decay starts above 0: the engine picks a different kernel for a
    zero weight decay, so crossing 0 compiles one more kernel, once.)
    """
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(40, dtype=torch.float64)) for _ in range(3)]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    compiled = descentlab.Adam(ps, lr=0.1, engine="compiled")
    reference = descentlab.Adam(qs, lr=0.1, engine="reference")
    ctrls = [
        attach(o, lr=CosineDecay(0.1, 10), beta1=LinearSchedule(0.5, 0.9, 10), weight_decay=
               LinearSchedule(0.001, 0.01, 10))
        for o in (compiled, reference)
    ]
    graphs = None
    for t in range(8):
        for p, q in zip(ps, qs, strict=True):
            p.grad = torch.sin(p.detach() * (t + 1))
            q.grad = p.grad.clone()
        compiled.step()
        reference.step()
        for c in ctrls:
            c.step()
        if t == 0:
            graphs = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs  # seven new values, no new graph
    for p, q in zip(ps, qs, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("how", HOWS)
def test_copies_drive_their_own_copy_of_a_wrapped_optimizer(how):
    opt = descentlab.NonFiniteGuard(descentlab.SGD(params(), lr=0.1, momentum=0.9))
    ctrl = attach(opt, lr=Warmup(ReduceOnPlateau(0.1, factor=0.5, patience=0), 2),
                  momentum=LinearSchedule(0.9, 0.5, 6))
    for loss in (3.0, 2.0, 2.5):
        ctrl.step(loss)
    twin = copy_by(ctrl, how)
    assert twin.optimizer is not opt and isinstance(twin.optimizer, descentlab.NonFiniteGuard)
    for loss in (2.6, 2.7, 1.0):
        ctrl.step(loss)
        twin.step(loss)
        assert twin.get_last_lr() == ctrl.get_last_lr()
        assert twin.get_last_values("momentum") == ctrl.get_last_values("momentum")
    twin.step(9.0)
    assert twin.last_epoch == ctrl.last_epoch + 1  # independent of the original
    assert opt.param_groups[0]["lr"] == ctrl.get_last_lr()[0]
