"""Optimizer behaviour every algorithm must share: groups, state, resume, schedulers, dtypes."""

from __future__ import annotations

import pytest
import torch

from tests.copies import saved_and_loaded
from tests.optim.engines import ENGINES_UNDER_TEST
from tests.optim.helpers import float64_default, loss_fn, make_params, max_rel_diff
from tests.optim.infos import INFOS

IDS = [info.name for info in INFOS]


def richest(info):
    """The setting with the most hyperparameters set (most state to carry), minimising."""
    setting = max(info.settings, key=len)
    return {k: v for k, v in setting.items() if k != "maximize"}


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_param_groups_with_different_hyperparameters(info, engine):
    """Two groups with different settings match torch.optim given the same groups."""
    a, b = info.settings[0], richest(info)
    # torch.optim.Adagrad ignores a group's initial_accumulator_value (it uses the
    # constructor's); ours honours it, tested by hand below
    b = {k: v for k, v in b.items() if k != "initial_accumulator_value"}

    def run(cls, **extra):
        w, bias, scale = make_params()
        groups = [{"params": [w], **a}, {"params": [bias, scale], **b}]
        opt = cls(groups, **extra)
        for t in range(30):
            opt.zero_grad()
            loss_fn([w, bias, scale], t).backward()
            opt.step()
        return [w, bias, scale]

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert max_rel_diff(run(info.ours, engine=engine), run(info.torch_cls)) <= 1e-12
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
def test_adagrad_honours_a_groups_initial_accumulator_value(engine):
    import descentlab

    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    groups = [{"params": [x]}, {"params": [y], "initial_accumulator_value": 3.0}]
    opt = descentlab.Adagrad(groups, lr=0.1, engine=engine)
    (x + y).sum().backward()
    opt.step()
    assert x.item() == pytest.approx(1 - 0.1 * 1 / (1 + 1e-10), rel=1e-15)
    assert y.item() == pytest.approx(1 - 0.1 * 1 / (2.0 + 1e-10), rel=1e-15)


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_parameter_without_gradient_is_untouched_and_gets_no_state(info, engine):
    params = make_params()
    idle = torch.randn(4, dtype=torch.float64, requires_grad=True)
    before = idle.detach().clone()
    opt = info.ours([*params, idle], **richest(info), engine=engine)
    for t in range(3):
        opt.zero_grad()
        loss_fn(params, t).backward()
        opt.step()
    assert torch.equal(idle.detach(), before)
    assert idle not in opt.state or not opt.state[idle]
    assert all(opt.state[p] for p in params)


def _train(opt, params, steps, start=0):
    for t in range(start, start + steps):
        opt.zero_grad()
        loss_fn(params, t).backward()
        opt.step()


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("via_torch_save", [False, True], ids=["in-memory", "torch.save"])
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_state_dict_resume_is_bit_identical(info, via_torch_save, engine):
    setting = richest(info)
    # uninterrupted run
    p_full = make_params()
    opt_full = info.ours(p_full, **setting, engine=engine)
    _train(opt_full, p_full, 40)
    # interrupted: 25 steps, save, rebuild everything, load, 15 more steps
    p_a = make_params()
    opt_a = info.ours(p_a, **setting, engine=engine)
    _train(opt_a, p_a, 25)
    saved_params = [p.detach().clone() for p in p_a]
    state = opt_a.state_dict()
    if via_torch_save:
        state = saved_and_loaded(state)
    p_b = [p.requires_grad_() for p in saved_params]
    opt_b = info.ours(p_b, **setting, engine=engine)
    opt_b.load_state_dict(state)
    _train(opt_b, p_b, 15, start=25)
    for x, y in zip(p_b, p_full, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize(
    "make_scheduler",
    [
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20),
        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=2, factor=0.5),
    ],
    ids=["StepLR", "CosineAnnealingLR", "ReduceLROnPlateau"],
)
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_torch_schedulers_drive_our_optimizers(info, make_scheduler, engine):
    def run(cls, **extra):
        params = make_params()
        opt = cls(params, **info.settings[0], **extra)
        sched = make_scheduler(opt)
        lrs = []
        for t in range(40):
            opt.zero_grad()
            loss = loss_fn(params, t)
            loss.backward()
            opt.step()
            plateau = isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
            sched.step(round(loss.item(), 1)) if plateau else sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        return params, lrs

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        ours, our_lrs = run(info.ours, engine=engine)
        ref, ref_lrs = run(info.torch_cls)
    finally:
        torch.set_default_dtype(old)
    assert our_lrs == ref_lrs
    assert len(set(our_lrs)) > 1
    assert max_rel_diff(ours, ref) <= 1e-12


_LS = torch.optim.lr_scheduler
#: (optimizer name, its settings, the scheduler, the group entries the scheduler moves)
CYCLING = {
    "SGD CyclicLR cycling momentum": (
        "SGD", {"lr": 0.1, "momentum": 0.9},
        lambda o: _LS.CyclicLR(o, 0.01, 0.2, step_size_up=3, base_momentum=0.5,
                               max_momentum=0.95), ("lr", "momentum")),
    "SGD SWALR": (
        "SGD", {"lr": 0.1, "momentum": 0.9},
        lambda o: torch.optim.swa_utils.SWALR(o, swa_lr=0.01, anneal_epochs=3), ("lr",)),
    "Adam CosineAnnealingWarmRestarts": (
        "Adam", {"lr": 0.01}, lambda o: _LS.CosineAnnealingWarmRestarts(o, T_0=4), ("lr",)),
    "Adam ExponentialLR on a tensor lr": (
        "Adam", {"lr": torch.tensor(0.01, dtype=torch.float64)},
        lambda o: _LS.ExponentialLR(o, gamma=0.8), ("lr",)),
    **{f"{name} OneCycleLR cycling beta1": (
        name, {"lr": 0.01},
        lambda o: _LS.OneCycleLR(o, max_lr=0.05, total_steps=12, base_momentum=0.6,
                                 max_momentum=0.95), ("lr", "betas"))
       for name in ("Adam", "AdamW", "NAdam", "RAdam", "Adamax")},
}


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("case", list(CYCLING))
def test_schedulers_that_move_momentum_betas_or_a_tensor_lr_drive_ours_as_torchs(case, engine):
    """Cyclic momentum (SGD), cyclic β₁ (the Adam family), SWALR, warm restarts and a tensor
    lr: the groups' values and the parameters follow torch's at every step."""
    import descentlab

    name, setting, make_scheduler, moved = CYCLING[case]

    def run(cls, **extra):
        params = make_params()
        groups = [{"params": params[:1]}, {"params": params[1:]}]
        opt = cls(groups, **{k: v.clone() if torch.is_tensor(v) else v
                             for k, v in setting.items()}, **extra)
        sched = make_scheduler(opt)
        seen = []
        for t in range(12):
            opt.zero_grad()
            loss_fn(params, t).backward()
            opt.step()
            sched.step()
            seen.append([[float(torch.as_tensor(x)) for x in torch.atleast_1d(
                torch.as_tensor(g[k]))] for g in opt.param_groups for k in moved])
        return params, seen

    with float64_default():
        ours, our_values = run(getattr(descentlab, name), engine=engine)
        ref, ref_values = run(getattr(torch.optim, name))
    assert our_values == ref_values
    assert len({str(v) for v in ref_values}) > 1  # the scheduler moved something
    assert max_rel_diff(ours, ref) <= 1e-12


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_grad_scaler_unscales_and_skips_inf_steps(info, engine):
    """GradScaler (CPU) unscales before our step and skips the step when it finds inf."""
    params = make_params(torch.float32)
    opt = info.ours(params, **info.settings[0], engine=engine)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    ref = make_params(torch.float32)
    ref_opt = info.torch_cls(ref, **info.settings[0])
    for t in range(5):
        opt.zero_grad()
        scaler.scale(loss_fn(params, t)).backward()
        if t == 2:
            params[0].grad[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()
        if t != 2:
            ref_opt.zero_grad()
            loss_fn(ref, t).backward()
            ref_opt.step()
    assert max_rel_diff(params, ref) <= 1e-5
    assert scaler.get_scale() < 2.0**8


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_closure_step_returns_loss_and_updates(info, engine):
    params = make_params()
    opt = info.ours(params, **info.settings[0], engine=engine)
    before = [p.detach().clone() for p in params]
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = loss_fn(params, 0)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.item() > 0
    assert len(calls) == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, params, strict=True))


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_dtypes_follow_torch(info, dtype, engine):
    """Each dtype keeps its dtype and tracks torch.optim within that dtype's precision."""
    tol = {torch.float64: 1e-13, torch.float32: 5e-6, torch.bfloat16: 0.05}[dtype]
    setting = info.settings[0]

    def run(cls, **extra):
        params = make_params(dtype)
        opt = cls(params, **setting, **extra)
        _train(opt, params, 20)
        return params, opt

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch.optim's bookkeeping scalars in float64
    try:
        ours, opt = run(info.ours, engine=engine)
        ref, _ = run(info.torch_cls)
    finally:
        torch.set_default_dtype(old)
    assert all(p.dtype == dtype for p in ours)
    assert all(
        v.dtype == dtype
        for s in opt.state.values()
        for k, v in s.items()
        if k != "step" and v.dim() > 0
    )
    assert max_rel_diff(ours, ref) <= tol


def ill_conditioned(x):
    """0.5·Σ dᵢ xᵢ² with curvatures from 1 to 100 (condition number 100)."""
    d = torch.logspace(0, 2, x.numel(), dtype=x.dtype)
    return 0.5 * (d * x * x).sum()


def rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


@pytest.mark.parametrize("info", INFOS, ids=IDS)
@pytest.mark.parametrize("problem", ["quadratic", "rosenbrock"])
def test_converges_to_known_minimum(info, problem):
    """A property of the algorithm: checked once, with the reference engine."""
    if problem == "quadratic":
        x = torch.linspace(-1, 1, 10, dtype=torch.float64).requires_grad_()
        f, x_star = ill_conditioned, torch.zeros(10, dtype=torch.float64)
    else:
        x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
        f, x_star = rosenbrock, torch.ones(2, dtype=torch.float64)
    setting = info.converge
    if problem == "rosenbrock" and info.converge_rosenbrock is not None:
        setting = info.converge_rosenbrock
    opt = info.ours([x], **setting, engine="reference")
    steps = info.converge_steps[problem == "rosenbrock"]
    for _ in range(steps):
        opt.zero_grad()
        f(x).backward()
        opt.step()
    assert torch.linalg.vector_norm(x.detach() - x_star).item() < 1e-2
