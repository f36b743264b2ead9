"""Tail averaging: where the advice averages the iterates instead of decaying the rate (noisy
gradients of a quadratic loss), and that a short run scores the mean of the last half of its
iterates."""

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from descentlab.advisor import advise
from descentlab.advisor.measure import Budget, NoiseProbe, average_from, short_run
from descentlab.advisor.method import tail_averaging
from descentlab.advisor.portfolio import PORTFOLIO
from descentlab.advisor.setup import from_problem
from descentlab.problems import get_problem

from . import user_task


def _regression(rows: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 10, generator=g)
    return x, x[:, :1] - 0.5 * x[:, 1:2] + 0.3 * torch.randn(rows, 1, generator=g)


def _linear(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(10, 1)


@pytest.mark.parametrize(("problem", "ratio", "averaged"), [
    ("diabetes_linreg", None, True),        # mini-batches, least squares on a linear model
    ("breast_cancer_logreg", None, False),  # logistic loss: not quadratic
    ("diabetes_lad", None, False),          # absolute deviations: kinks
    ("digits_mlp", None, False),            # a hidden layer
    ("noisy_quadratic", 0.02, True),        # noisy gradients of a quadratic
    ("noisy_quadratic", None, False),       # no noise probe: the same function every step
    ("square", 0.0, False),
])
def test_tail_averaging_needs_noise_and_a_quadratic_loss(problem, ratio, averaged):
    noise = None if ratio is None else NoiseProbe(3, ratio, 1.0)
    assert tail_averaging(from_problem(get_problem(problem)), noise, 0) is averaged


def test_short_run_scores_the_mean_of_the_last_half_of_the_iterates():
    """Momentum SGD at a constant rate on x² + y² for 10 steps, by hand: the metric at the
    mean of the iterates after steps 6..10 is the run's final value; before step 6 the
    curve is the iterate's own."""
    problem = get_problem("square")
    cand = next(c for c in PORTFOLIO if c.name == "momentum").resolved("sgd").averaged()
    assert cand.schedule == "warmup_average" and average_from(10) == 5
    run = short_run(from_problem(problem), cand, 0.05, 10, 3, Budget(10), warmup_fraction=0.0)
    task = problem.build(3)
    (w,) = task.parameters()
    opt = torch.optim.SGD([w], lr=0.05, momentum=0.9)
    iterates, values = [], []
    for _ in range(10):
        task.train_step(opt)
        iterates.append(w.detach().clone())
        values.append(task.evaluate()["loss"])
    mean = torch.stack(iterates[5:]).mean(0)
    with torch.no_grad():
        w.copy_(mean)
    assert run.final == pytest.approx(task.evaluate()["loss"], rel=1e-5)
    assert run.final != pytest.approx(values[-1], rel=1e-3)
    assert dict(run.curve)[5] == pytest.approx(values[4], rel=1e-6)


def test_least_squares_user_task_is_averaged_and_its_code_uses_the_average():
    mse = nn.functional.mse_loss
    x, y = _regression(256, 0)
    rec = advise(_linear, mse, (x, y), _regression(128, 1), steps=100, budget=0.2,
                 batch_size=32)
    assert rec.schedule["kind"] == "warmup_average" and rec.average_from == 50
    assert rec.as_candidate().schedule == "warmup_average"
    assert any("tail averaging" in r for r in rec.reasons)
    model = _linear(0)
    assert isinstance(rec.average_model(model), AveragedModel)
    opt = rec.make_optimizer(model.parameters())
    controller = rec.attach_schedule(opt)
    for _ in range(10):
        controller.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(rec.lr)  # constant after the warm-up
    model = _linear(0)  # a fresh one: the optimizer above holds the first one's memory
    scope = {"model": model, "loss_fn": mse, "next_batch": lambda: (x[:32], y[:32])}
    code = rec.code()
    assert "AveragedModel(model)" in code and "if step >= 50:" in code
    exec(compile(code, "<advice>", "exec"), scope)
    assert torch.equal(model.weight, scope["average"].module.weight)
    with torch.no_grad():
        assert float(mse(model(x), y)) < 0.5 * float(mse(_linear(0)(x), y))
    # the MLP of the other tests, on a classification loss, keeps the cosine
    mlp = advise(user_task.model_fn, nn.functional.cross_entropy, user_task.noisy_data(256, 0),
                 user_task.noisy_data(128, 1), steps=100, budget=0.2, batch_size=32)
    assert mlp.schedule["kind"] == "warmup_cosine" and mlp.average_from is None
    assert mlp.average_model(user_task.model_fn(0)) is None
