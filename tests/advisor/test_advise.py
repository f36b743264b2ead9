"""The advisor on a user task (defined in user_task.py) and on built-in problems."""

import math

import pytest
import torch
from torch import nn

import descentlab
from descentlab.advisor import advise, advise_problem, build_portfolio, method
from descentlab.advisor.measure import Budget, short_run
from descentlab.advisor.method import CHECK_MIN, RANGE_STEPS, halving_plan, range_steps
from descentlab.advisor.portfolio import PORTFOLIO
from descentlab.advisor.setup import from_problem
from descentlab.optim import registry
from descentlab.problems import get_problem

from . import user_task


class CountingLoss:
    """Counts the loss computations that build a graph (one per gradient evaluation)."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, out, y):
        if torch.is_grad_enabled():
            self.graphs += 1
        return nn.functional.cross_entropy(out, y)



def assert_pasted_code_halves_the_loss(rec, model, x, y):
    """Run ``rec.code()`` as a user would paste it, on one full batch; the loss must halve."""
    first = float(nn.functional.cross_entropy(model(x), y).detach())
    scope = {"model": model, "loss_fn": nn.functional.cross_entropy,
             "next_batch": lambda: (x, y)}
    exec(compile(rec.code(), "<advice>", "exec"), scope)
    assert float(nn.functional.cross_entropy(model(x), y).detach()) < 0.5 * first

def _train(rec, model, x, y, steps):
    opt = rec.make_optimizer(model.parameters())
    sched = rec.attach_schedule(opt)
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss
        opt.step(closure)
        if sched is not None:
            sched.step()
    return opt


@pytest.fixture(scope="module")
def user_advice():
    loss = CountingLoss()
    pieces = user_task.build()
    rec = advise(pieces["model_fn"], loss, pieces["train_data"], pieces["val_data"],
                 steps=100, budget=0.3, batch_size=32)
    return rec, loss


def test_user_task_every_evaluation_is_counted_and_within_budget(user_advice):
    rec, loss = user_advice
    ev = rec.evidence
    assert ev.total_spent <= ev.budget == 30
    # the two extra graphs are the shape checks on two rows, before any training
    assert loss.graphs == ev.total_spent + 2
    assert set(ev.spent) <= {"noise probe", "range tests", "short runs"}
    assert rec.optimizer in descentlab.available_optimizers() + ["lbfgs"]
    assert 0.0 <= rec.confidence <= 1.0 and rec.reasons


def test_user_task_recommendation_trains_the_model(user_advice):
    rec, _ = user_advice
    x, y = user_task.data(256, 0)
    xv, yv = user_task.data(128, 1)
    model = user_task.model_fn(0)
    before = float(nn.functional.cross_entropy(model(xv), yv).detach())
    _train(rec, model, x, y, rec.steps)
    after = float(nn.functional.cross_entropy(model(xv), yv).detach())
    assert after < 0.5 * before
    if rec.schedule is not None:
        assert rec.schedule["total_steps"] == 100


def test_user_task_code_snippet_runs(user_advice):
    rec, _ = user_advice
    x, y = user_task.data(256, 0)
    model = user_task.model_fn(0)
    assert_pasted_code_halves_the_loss(rec, model, x, y)


def test_builtin_problem_advice_reaches_the_target():
    problem = get_problem("ill_conditioned_quadratic")
    rec = advise_problem(problem, budget=0.2)
    assert rec.evidence.total_spent <= 40
    assert "lbfgs" in rec.evidence.tried()  # full batch, 2 parameters
    task = problem.build(1)
    opt = rec.make_optimizer(task.parameters())
    sched = rec.attach_schedule(opt)
    for _ in range(problem.steps):
        task.train_step(opt)
        if sched is not None:
            sched.step()
    assert problem.reached(task.evaluate()[problem.metric])


def test_every_builtin_problem_gets_advice():
    for name in descentlab.available_problems():
        problem = get_problem(name)
        if problem.kind != "analytic":
            continue  # the learning problems run in the CLI tests and the benchmark
        rec = advise_problem(problem, budget=0.12)
        assert rec.evidence.total_spent <= rec.evidence.budget
        assert rec.problem == name


def test_portfolio_is_built_from_what_is_registered(monkeypatch):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    chosen, skipped = build_portfolio(full_batch=False, num_params=58, model=model)
    assert [c.name for c in chosen] == ["adamw", "momentum", "nadamw", "schedule_free",
                                        "muon", "lion"]
    assert chosen[3].optimizer == "adamw_schedulefree"
    assert "lbfgs" in skipped  # mini-batch
    linear = nn.Linear(4, 2)  # no hidden matrix: no Muon
    chosen, skipped = build_portfolio(full_batch=True, num_params=10, model=linear)
    assert skipped["muon"] == "the model has no hidden weight matrices"
    assert "lbfgs" in [c.name for c in chosen]
    monkeypatch.delitem(registry.OPTIMIZERS, "lion")
    _, skipped = build_portfolio(full_batch=False, num_params=58, model=model)
    assert skipped["lion"] == "not in the optimizer registry"


def test_hidden_matrices_follow_muon_param_groups():
    """Attention projections count as hidden matrices; the head, embeddings and norms not."""
    from descentlab.advisor.portfolio import hidden_matrices

    model = nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.Linear(8, 3))
    assert hidden_matrices(model) == 1
    assert hidden_matrices(nn.MultiheadAttention(8, 2)) == 1  # in_proj (out_proj is the head)
    assert hidden_matrices(None) == 0


def test_newcomers_run_and_muon_code_executes():
    """Schedule-Free (train/eval swap), Lion and Muon (two groups) take part; the
    recommended Muon code runs as pasted."""
    pieces = user_task.build()
    rec = advise(pieces["model_fn"], pieces["loss_fn"], pieces["train_data"],
                 pieces["val_data"], steps=500, budget=0.5, batch_size=32,
                 candidates=["schedule_free", "lion", "muon"])
    assert sorted(rec.evidence.tried()) == ["lion", "muon", "schedule_free"]
    assert all(math.isfinite(r.final) for r in rec.evidence.rungs[0])
    muon = advise(pieces["model_fn"], pieces["loss_fn"], pieces["train_data"],
                  pieces["val_data"], steps=100, budget=0.3, batch_size=32,
                  candidates=["muon"])
    assert muon.optimizer == "muon"
    model = pieces["model_fn"](0)
    opt = muon.make_optimizer(model)
    assert isinstance(opt, descentlab.Muon) and [g["rule"] for g in opt.param_groups] == [
        "muon", "adamw"]
    model, (x, y) = pieces["model_fn"](0), pieces["train_data"]  # a fresh model
    first = float(nn.functional.cross_entropy(model(x), y).detach())
    scope = {"model": model, "loss_fn": nn.functional.cross_entropy,
             "next_batch": lambda: (x, y)}
    exec(compile(muon.code(), "<advice>", "exec"), scope)
    assert float(nn.functional.cross_entropy(model(x), y).detach()) < 0.5 * first


def test_halving_plan_fits_the_budget():
    for n in range(1, 8):
        for available in (10, 37, 100, 1000):
            s, survivors = halving_plan(n, available)
            assert sum(k * s * 2**i for i, k in enumerate(survivors)) <= available
            assert survivors[0] == n and (n == 1 or survivors[-1] >= 2)


def test_range_tests_are_long_enough_or_candidates_are_dropped():
    """Several candidates share the budget only while each range test gets >= 30 steps;
    one candidate left alone (no L-BFGS beside it) gets up to 40 steps of the budget."""
    assert RANGE_STEPS == (30, 40)
    assert range_steps(180, 3, alone=False) == 30
    assert range_steps(180, 4, alone=False) == 22  # < 30: the last candidate is dropped
    assert range_steps(500, 2, alone=False) == 40
    assert range_steps(37, 1, alone=True) == 37 and range_steps(500, 1, alone=True) == 40
    pieces = user_task.build()
    rec = advise(pieces["model_fn"], pieces["loss_fn"], pieces["train_data"],
                 pieces["val_data"], steps=200, budget=0.2, batch_size=32)
    ev = rec.evidence
    assert [t.candidate for t in ev.range_tests] == ["adamw"] == [rec.candidate]
    assert all("at least 30 steps" in ev.skipped[name] for name in ("momentum", "nadamw"))
    test = ev.range_tests[0]
    assert ev.spent["range tests"] == len(test.lrs)
    assert len(test.lrs) == 40 or test.diverged_at is not None
    if not ev.rungs:  # the range test took the budget: no findings, low confidence
        assert ev.total_spent > 40 - 10 and rec.confidence <= 0.2
        assert "no short run" in rec.reasons[0] and math.isnan(rec.expected)
    assert rec.lr == test.lr and rec.schedule["peak_lr"] == test.lr
    model, (x, y) = pieces["model_fn"](0), pieces["train_data"]
    assert_pasted_code_halves_the_loss(rec, model, x, y)


def test_lbfgs_candidate_line_searches_and_uses_the_whole_budget():
    """With max_iter=1, torch's default max_eval (max_iter·5//4 = 1) leaves the strong Wolfe
    search no trial point, and tolerance_grad=1e-7 stops short of float32's last digits;
    the candidate allows 24 trials per step and stops only when the budget is spent.
    On Rosenbrock (minimum 0 at (1, 1)) that reaches the minimum within the problem's
    1,000 evaluations, and the advice chooses it over the first-order candidates."""
    problem = get_problem("rosenbrock")
    cand = next(c for c in PORTFOLIO if c.name == "lbfgs").resolved("lbfgs")
    assert cand.defaults["max_eval"] > cand.defaults["max_iter"]
    run = short_run(from_problem(problem), cand, 1.0, problem.steps, 1, Budget(problem.steps))
    assert run.evaluations <= problem.steps and run.final < 1e-10
    rec = advise_problem(problem, budget=0.2)
    assert rec.candidate == "lbfgs" and len(rec.evidence.tried()) >= 3


def test_lbfgs_is_never_clipped():
    """A clipped gradient breaks L-BFGS's line search: on Beale, clipped at 2× the median norm
    of its short run (the clipping rule's level), it misses the target after 300 evaluations
    on seed 2 (8.3) that it reaches unclipped (0); so the advice never clips L-BFGS."""
    problem = get_problem("beale")
    rec = advise_problem(problem, budget=0.2)
    assert rec.candidate == "lbfgs"
    assert rec.clip_grad_norm is None and "line search" in " ".join(rec.reasons)
    norms = next(r for r in rec.evidence.rungs[-1] if r.candidate == "lbfgs").grad_norms
    assert max(norms) > 10 * sorted(norms)[len(norms) // 2]  # the rule's 'jump'
    cand = next(c for c in PORTFOLIO if c.name == "lbfgs").resolved("lbfgs")
    finals = [short_run(from_problem(problem), cand, 1.0, problem.steps, 2,
                        Budget(problem.steps), clip=clip).final
              for clip in (None, 2 * sorted(norms)[len(norms) // 2])]
    assert problem.reached(finals[0]) and not problem.reached(finals[1])


def _advise_with_check(**kwargs):
    """The user task with noisy labels at 55 evaluations: one candidate alone (mini-batch, no
    L-BFGS), below the 60 of the noise probe, enough for its 30-step range test and a
    learning-rate check."""
    pieces = user_task.build()
    return advise(pieces["model_fn"], pieces["loss_fn"], user_task.noisy_data(256, 0),
                  user_task.noisy_data(128, 1), steps=100, budget=0.55, batch_size=32,
                  **kwargs)


def test_learning_rate_check_splits_the_budget_and_keeps_the_better_rate():
    rec = _advise_with_check()
    ev = rec.evidence
    assert ev.total_spent <= ev.budget == 55
    assert len(ev.range_tests[0].lrs) == RANGE_STEPS[0] or ev.range_tests[0].diverged_at
    (run,), (check,) = ev.rungs[-1], ev.lr_checks
    suggested = ev.range_tests[0].lr
    assert run.lr == suggested and check.lr == pytest.approx(suggested / 3)
    assert check.evaluations == run.evaluations >= CHECK_MIN
    assert ev.spent["learning-rate check"] == check.evaluations
    assert rec.lr == (check.lr if check.final < run.final else suggested)
    assert any("learning rate checked" in r for r in rec.reasons)
    assert rec.to_dict()["evidence"]["lr_checks"][0]["lr"] == check.lr


def test_learning_rate_check_lowers_a_rate_that_is_too_high(monkeypatch):
    """A range test that suggests 3.0 for AdamW (far above what trains this MLP on noisy
    labels): the check's run at 1.0 ends better, so the advice lowers the rate and says so."""
    real = method.range_test

    def too_high(*args, **kwargs):
        test = real(*args, **kwargs)
        test.lr = 3.0
        return test

    monkeypatch.setattr(method, "range_test", too_high)
    rec = _advise_with_check()
    (run,), (check,) = rec.evidence.rungs[-1], rec.evidence.lr_checks
    assert check.final < run.final and rec.lr == pytest.approx(1.0)
    assert rec.schedule["peak_lr"] == rec.lr and "lowered to 1" in " ".join(rec.reasons)


def test_no_learning_rate_check_without_room_for_it():
    """Below 30 + 2·CHECK_MIN evaluations the lone candidate keeps its longer range test."""
    pieces = user_task.build()
    rec = advise(pieces["model_fn"], pieces["loss_fn"], pieces["train_data"],
                 pieces["val_data"], steps=100, budget=0.45, batch_size=32)
    test = rec.evidence.range_tests[0]
    assert not rec.evidence.lr_checks and (len(test.lrs) == 40 or test.diverged_at)


def test_curvature_is_measured_only_for_momentum():
    """λ_max caps momentum SGD's rate and nothing else: at 60 evaluations only AdamW is
    range-tested, so the probe's 13 evaluations go to the learning-rate check instead; at
    150, momentum SGD is tested beside AdamW and λ_max is measured."""
    pieces = user_task.build()
    args = (pieces["model_fn"], pieces["loss_fn"], user_task.noisy_data(64, 0),
            user_task.noisy_data(32, 1))
    small = advise(*args, steps=100, budget=0.6, batch_size=16).evidence
    assert "noise probe" in small.spent and "curvature" not in small.spent
    assert small.curvature is None and [t.candidate for t in small.range_tests] == ["adamw"]
    assert small.lr_checks and small.total_spent <= 60
    large = advise(*args, steps=300, budget=0.5, batch_size=16,
                   candidates=("adamw", "momentum")).evidence
    assert "momentum" in [t.candidate for t in large.range_tests]
    assert 0 < large.spent["curvature"] <= method.CURVATURE_COST and large.curvature > 0
    assert large.total_spent <= 150


def test_lion_range_test_measures_its_rate():
    """Over 1e-5…0.1 Lion's smoothed loss still fell at the sweep's last step, so the
    "minimum/10" rule returned 0.01 on every problem; its sweep to 1 turns inside and the
    suggestion differs by problem."""
    lion = next(c for c in PORTFOLIO if c.name == "lion").resolved("lion")
    assert lion.lr_range == (1e-5, 1.0)
    suggested = {}
    for name in ("breast_cancer_logreg", "digits_mlp"):
        test = method.range_test(from_problem(get_problem(name)), lion, 30, 0, Budget(30))
        turn = min(range(len(test.smoothed)), key=test.smoothed.__getitem__)
        assert turn < len(test.lrs) - 1 or test.diverged_at is not None
        suggested[name] = test.lr
    assert suggested["breast_cancer_logreg"] > 2 * suggested["digits_mlp"]
