"""compare's runner, diagnose and the LR range test use Schedule-Free's modes correctly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import descentlab
from descentlab.bench.entrants import get_entrant
from descentlab.bench.runner import run, task_problem
from descentlab.diagnostics.lr_finder import lr_range_test
from descentlab.diagnostics.run import diagnose
from tests.bench.fakes import quadratic_problem


@pytest.mark.parametrize("name", ["sgd_schedulefree", "adamw_schedulefree", "radam_schedulefree"])
def test_compare_runs_train_in_train_mode_and_evaluate_at_x(name):
    problem = quadratic_problem(steps=30, eval_every=4, h=(1.0, 3.0))
    entrant = get_entrant(name)
    sampled = {"lr": 0.05, "momentum" if name.startswith("sgd") else "beta1": 0.9}
    record = run(problem, entrant, sampled, seed=0)
    # by hand: the same 30 steps without the intermediate evaluations, then eval()
    torch.manual_seed(0)
    task = task_problem(problem, entrant).build(0)
    opt = entrant.build(task.parameters(), sampled)
    opt.train()
    for _ in range(30):
        task.train_step(opt)
    with torch.no_grad():
        at_y = task.evaluate()["loss"]
        opt.eval()
        at_x = task.evaluate()["loss"]
    assert record.final["loss"] == at_x  # exactly: evaluating mid-run changes nothing
    assert at_x != at_y


def _data(n=48):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    return x, x @ torch.randn(5, 1, generator=g)


def test_diagnose_validates_at_x_and_trains_in_train_mode():
    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    opt = descentlab.AdamWScheduleFree(model.parameters(), lr=0.05)
    x, y = _data()
    mon = diagnose(model, opt, nn.functional.mse_loss, [(x, y)], steps=20,
                   validation=(x, y), validate_every=5)
    assert opt.training
    with torch.no_grad():
        at_y = float(nn.functional.mse_loss(model(x), y))
        opt.eval()
        at_x = float(nn.functional.mse_loss(model(x), y))
    assert mon.history.val_losses[-1] == pytest.approx(at_x, rel=1e-6)
    assert abs(at_x - at_y) > 1e-3 * at_x


def test_lr_range_test_steps_a_schedule_free_optimizer_and_restores_its_mode():
    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    opt = descentlab.SGDScheduleFree(model.parameters(), lr=0.1)
    x, y = _data()
    before = [p.detach().clone() for p in model.parameters()]
    result = lr_range_test(model, opt, nn.functional.mse_loss, [(x, y)], num_steps=20,
                           start_lr=1e-4, end_lr=1.0)
    assert len(result.losses) >= 3 and len(set(result.losses)) > 1
    assert not opt.training  # it was in eval mode (a fresh optimizer) and is again
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before, strict=True))



def test_trajectories_show_the_evaluation_point():
    from descentlab.problems.trajectory import named_optimizer, run_trajectory

    path = run_trajectory("rosenbrock", named_optimizer("sgd_schedulefree", lr=1e-3), 20)
    # by hand: the same steps, then eval()
    from descentlab.problems.analytic import FunctionTask, get_function

    fn = get_function("rosenbrock")
    task = FunctionTask(fn, torch.as_tensor(fn.start, dtype=torch.float32), two_d=True)
    opt = descentlab.SGDScheduleFree(task.parameters(), lr=1e-3)
    opt.train()
    for _ in range(20):
        task.train_step(opt)
    y = task.position().numpy()
    opt.eval()
    assert (path[-1] == task.position().numpy()).all() and (path[-1] != y).any()
