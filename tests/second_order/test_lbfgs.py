"""L-BFGS is torch.optim.LBFGS: same iterates, same state, checkpoints both ways.

Every comparison here is against ``torch.optim.LBFGS`` itself (plus closed-form
minima for what torch cannot do: several groups, other line searches).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from descentlab.linesearch import Armijo
from descentlab.second_order import LBFGS

SEARCHES = [None, "strong_wolfe"]
TORCH_STATE_KEYS = {"func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
                    "prev_flat_grad", "prev_loss", "al"}


def logistic_problem(seed: int = 0, n: int = 80):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    y = (torch.rand(n, generator=gen) < torch.sigmoid(x @ torch.randn(6, generator=gen))) * 2.0
    y = y - 1.0

    def loss(w, rows=slice(None)):
        return torch.nn.functional.softplus(-y[rows] * (x[rows] @ w)).mean() + 0.01 * (w @ w)

    return loss


def closure_for(opt, loss_fn, *args):
    def closure():
        opt.zero_grad()
        loss = loss_fn(*args)
        loss.backward()
        return loss

    return closure


def pair(params_fn, **kwargs):
    """(torch's LBFGS, ours), each over its own copy of the same parameters."""
    a, b = params_fn(), params_fn()
    return (a, torch.optim.LBFGS(a, **kwargs)), (b, LBFGS(b, **kwargs))


def assert_same(ps, qs, rtol=0.0):
    for p, q in zip(ps, qs, strict=True):
        scale = max(float(q.detach().abs().max()), 1e-300)
        assert float((p.detach() - q.detach()).abs().max()) <= rtol * scale


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("history", [3, 100])
def test_iterates_equal_torch_bit_for_bit(search, history):
    loss_fn = logistic_problem()
    (pt, ref), (po, ours) = pair(lambda: [torch.zeros(6, requires_grad=True)], lr=0.5,
                                 max_iter=7, history_size=history, line_search_fn=search)
    for _ in range(6):
        lt = ref.step(closure_for(ref, loss_fn, *pt))
        lo = ours.step(closure_for(ours, loss_fn, *po))
        assert float(lt.detach()) == float(lo.detach())
        assert_same(po, pt)
    st, so = ref.state[pt[0]], ours.state[po[0]]
    assert set(so) == set(st) == TORCH_STATE_KEYS
    assert (so["func_evals"], so["n_iter"]) == (st["func_evals"], st["n_iter"])
    assert len(so["old_dirs"]) == len(st["old_dirs"])
    for key in ("old_dirs", "old_stps", "ro"):
        assert all(torch.equal(a, b) for a, b in zip(so[key], st[key], strict=True)), key


def test_float32_and_a_tensor_lr_equal_torch():
    loss_fn = logistic_problem(2)

    def params():
        return [torch.zeros(6, dtype=torch.float32, requires_grad=True)]

    def f(w):
        return loss_fn(w.double()).float()

    (pt, ref), (po, ours) = pair(params, lr=torch.tensor(0.8), max_iter=5,
                                 line_search_fn="strong_wolfe")
    for _ in range(4):
        ref.step(closure_for(ref, f, *pt))
        ours.step(closure_for(ours, f, *po))
    assert_same(po, pt)


def stochastic_run(opt_cls, search, steps, start=None):
    """A mini-batch logistic regression: batch k is rows 16k..16k+15 (cycling), two
    L-BFGS iterations per step, so the iterates keep moving for all the steps."""
    loss_fn = logistic_problem(5, n=160)
    w = torch.zeros(6, requires_grad=True)
    opt = opt_cls([w], lr=0.3, max_iter=2, history_size=5, line_search_fn=search)
    first = 0
    if start is not None:
        with torch.no_grad():
            w.copy_(start["w"])
        opt.load_state_dict(copy.deepcopy(start["opt"]))
        first = start["k"]
    for k in range(first, first + steps):
        rows = slice(16 * (k % 10), 16 * (k % 10) + 16)
        opt.step(closure_for(opt, loss_fn, w, rows))
    return w.detach().clone(), opt, first + steps


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_checkpoints_resume_both_ways_for_50_steps(search, direction):
    """The issue's goal: a torch checkpoint continues in ours (and ours in torch) as the
    saving class would continue, <= 1e-12 relative after 50 more steps (measured: 0)."""
    save_cls, load_cls = ((torch.optim.LBFGS, LBFGS) if direction == "torch_to_ours"
                          else (LBFGS, torch.optim.LBFGS))
    w, opt, k = stochastic_run(save_cls, search, 10)
    start = {"w": w, "opt": opt.state_dict(), "k": k}
    assert set(start["opt"]["state"][0]) == TORCH_STATE_KEYS
    expected, _, _ = stochastic_run(save_cls, search, 50, start)
    resumed, _, _ = stochastic_run(load_cls, search, 50, start)
    assert float((expected - w).abs().max()) > 1e-3  # the 50 steps did move
    assert float((resumed - expected).abs().max()) <= 1e-12 * float(expected.abs().max())


def test_torch_save_load_of_the_state_dict(tmp_path):
    w, opt, k = stochastic_run(torch.optim.LBFGS, "strong_wolfe", 4)
    torch.save(opt.state_dict(), tmp_path / "lbfgs.pt")
    start = {"w": w, "opt": torch.load(tmp_path / "lbfgs.pt", weights_only=True), "k": k}
    expected, _, _ = stochastic_run(torch.optim.LBFGS, "strong_wolfe", 5, start)
    resumed, _, _ = stochastic_run(LBFGS, "strong_wolfe", 5, start)
    assert torch.equal(resumed, expected)


def test_curvature_pairs_use_torchs_absolute_test():
    """A pair is kept iff y.s > 1e-10 (not relative to y.y): on a tiny quadratic every
    pair has y.s ~ 1e-12 and torch keeps none, so neither may ours."""
    a = torch.tensor([1e-6, 2e-6])

    def f(w):
        return 0.5 * (a * w * w).sum()

    (pt, ref), (po, ours) = pair(lambda: [torch.ones(2, requires_grad=True)], lr=1.0,
                                 max_iter=5, tolerance_grad=0.0, tolerance_change=0.0)
    ref.step(closure_for(ref, f, *pt))
    ours.step(closure_for(ours, f, *po))
    assert len(ref.state[pt[0]]["old_dirs"]) == len(ours.state[po[0]]["old_dirs"]) == 0
    assert_same(po, pt)


def run_both(make_params, closure_of, steps=3, **kwargs):
    (pt, ref), (po, ours) = pair(make_params, **kwargs)
    out = []
    for _ in range(steps):
        out.append((ref.step(closure_of(ref, pt)), ours.step(closure_of(ours, po))))
    assert_same(po, pt)
    return out, (pt, ref), (po, ours)


@pytest.mark.parametrize("search", SEARCHES)
def test_closure_returning_a_python_float(search):
    loss_fn = logistic_problem(3)

    def closure_of(opt, ps):
        def closure():
            opt.zero_grad()
            loss = loss_fn(*ps)
            loss.backward()
            return loss.item()
        return closure

    out, _, _ = run_both(lambda: [torch.zeros(6, requires_grad=True)], closure_of,
                         line_search_fn=search)
    assert all(isinstance(b, float) and a == b for a, b in out)


def test_gradients_set_outside_the_closure():
    """The closure only reports a loss; the gradient is set beforehand (a constant
    field g = c): torch reads p.grad as it is, and so must ours."""
    c = torch.tensor([0.5, -1.0, 2.0])

    def closure_of(opt, ps):
        ps[0].grad = c.clone()
        return lambda: torch.tensor(1.0)

    run_both(lambda: [torch.zeros(3, requires_grad=True)], closure_of, max_iter=4)


def test_parameters_that_need_no_gradient_do_not_move():
    def make():
        return [torch.ones(3), torch.ones(2, requires_grad=True)]

    def closure_of(opt, ps):
        def closure():
            opt.zero_grad()
            loss = (ps[0] ** 2).sum() + ((ps[1] - 3.0) ** 2).sum()
            loss.backward()
            return loss
        return closure

    _, _, (po, ours) = run_both(make, closure_of, line_search_fn="strong_wolfe")
    assert torch.equal(po[0], torch.ones(3))
    torch.testing.assert_close(po[1].detach(), torch.full((2,), 3.0))


def test_no_parameter_needs_a_gradient():
    def closure_of(opt, ps):
        return lambda: (ps[0] ** 2).sum()

    out, _, (po, _) = run_both(lambda: [torch.ones(3)], closure_of)
    assert torch.equal(po[0], torch.ones(3)) and all(float(b) == 3.0 for _, b in out)


@pytest.mark.parametrize("tolerance", [math.inf, -math.inf])
def test_infinite_tolerance_grad_returns_the_closure_type(tolerance):
    def closure_of(opt, ps):
        return lambda: torch.tensor([10.0])

    gen = torch.Generator().manual_seed(1)
    w0, b0 = torch.randn(10, 5, generator=gen), torch.randn(10, generator=gen)
    out, _, _ = run_both(lambda: [w0.clone(), b0.clone()], closure_of,
                         tolerance_grad=tolerance)
    assert all(type(a) is type(b) and torch.equal(a, b) for a, b in out)


def test_zero_gradients_leave_the_parameters_alone():
    def closure_of(opt, ps):
        def closure():
            for p in ps:
                p.grad = torch.zeros_like(p)
            return torch.tensor(1.0)
        return closure

    _, _, (po, _) = run_both(lambda: [torch.ones(4, requires_grad=True)], closure_of)
    assert torch.equal(po[0].detach(), torch.ones(4))


@pytest.mark.parametrize("search", SEARCHES)
def test_degenerate_objective_of_torchs_suite(search):
    """torch's own test model: ||W x + b||^2 with W 10x5 and one input vector, a
    rank-deficient least squares with a whole subspace of minimisers."""
    gen = torch.Generator().manual_seed(0)
    w0, b0, x = (torch.randn(10, 5, generator=gen), torch.randn(10, generator=gen),
                 torch.randn(5, generator=gen))

    def make():
        return [w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)]

    def closure_of(opt, ps):
        def closure():
            opt.zero_grad()
            loss = (ps[0].mv(x) + ps[1]).pow(2).sum()
            loss.backward()
            return loss
        return closure

    out, _, (po, ours) = run_both(make, closure_of, steps=20, line_search_fn=search)
    assert float(closure_of(ours, po)().detach()) < float(out[0][1].detach())


@pytest.mark.parametrize("search", SEARCHES)
def test_complex_parameters_equal_torch_and_their_real_view(search):
    def f(z):
        return (z.abs() ** 2 - 1.0).pow(2).sum() + (z * (1 + 2j)).real.sum()

    gen = torch.Generator().manual_seed(4)
    z0 = torch.randn(3, dtype=torch.complex128, generator=gen)

    def closure_of(opt, ps):
        return closure_for(opt, f, *ps)

    _, _, (po, _) = run_both(lambda: [z0.clone().requires_grad_(True)], closure_of,
                             line_search_fn=search, max_iter=6)
    r = torch.view_as_real(z0).clone().requires_grad_(True)
    real = LBFGS([r], line_search_fn=search, max_iter=6)
    for _ in range(3):
        real.step(closure_for(real, lambda v: f(torch.view_as_complex(v)), r))
    torch.testing.assert_close(torch.view_as_real(po[0].detach()), r.detach(), rtol=0, atol=0)


def test_step_hooks_and_deepcopy_public_attributes():
    w = torch.zeros(6, requires_grad=True)
    opt = LBFGS([w], max_iter=3)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    opt.step(closure_for(opt, logistic_problem(), w))
    assert calls == ["pre", "post"]
    public = {k for k in vars(opt) if not k.startswith("_")}
    assert public == {k for k in vars(copy.deepcopy(opt)) if not k.startswith("_")}


def test_quadratic_minimum_with_armijo_search():
    gen = torch.Generator().manual_seed(2)
    m = torch.randn(8, 8, generator=gen)
    a, b = m @ m.T + torch.eye(8), torch.randn(8, generator=gen)
    w = torch.zeros(8, requires_grad=True)
    opt = LBFGS([w], max_iter=100, line_search_fn=Armijo(), tolerance_grad=1e-12,
                tolerance_change=0.0)
    opt.step(closure_for(opt, lambda v: 0.5 * v @ a @ v - b @ v, w))
    torch.testing.assert_close(w.detach(), torch.linalg.solve(a, b), rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("search", SEARCHES)
def test_two_param_groups_equal_one_group(search):
    loss_fn = logistic_problem(3)
    w = torch.zeros(6, requires_grad=True)
    one = torch.optim.LBFGS([w], max_iter=15, line_search_fn=search)
    one.step(closure_for(one, loss_fn, w))
    u = torch.zeros(2, requires_grad=True)
    v = torch.zeros(4, requires_grad=True)
    two = LBFGS([{"params": [u]}, {"params": (p for p in [v])}], max_iter=15,
                line_search_fn=search)
    two.step(closure_for(two, lambda: loss_fn(torch.cat([u, v]))))
    assert torch.equal(torch.cat([u, v]).detach(), w.detach())


def test_per_group_lr_still_finds_the_minimum():
    loss_fn = logistic_problem(4)
    w = torch.zeros(6, requires_grad=True)
    ref = torch.optim.LBFGS([w], max_iter=100, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-11, tolerance_change=0.0)
    ref.step(closure_for(ref, loss_fn, w))
    u = torch.zeros(3, requires_grad=True)
    v = torch.zeros(3, requires_grad=True)
    opt = LBFGS([{"params": [u], "lr": 1.0}, {"params": [v], "lr": 0.1}], max_iter=100,
                line_search_fn="strong_wolfe", tolerance_grad=1e-11, tolerance_change=0.0)
    opt.step(closure_for(opt, lambda: loss_fn(torch.cat([u, v]))))
    torch.testing.assert_close(torch.cat([u, v]).detach(), w.detach(), rtol=1e-6, atol=1e-8)


def test_closure_without_backward_is_accepted():
    loss_fn = logistic_problem(7)
    w = torch.zeros(6, requires_grad=True)
    opt = LBFGS([w], max_iter=30, line_search_fn="strong_wolfe")
    opt.step(lambda: loss_fn(w))
    w_ref = torch.zeros(6, requires_grad=True)
    ref = torch.optim.LBFGS([w_ref], max_iter=30, line_search_fn="strong_wolfe")
    ref.step(closure_for(ref, loss_fn, w_ref))
    assert torch.equal(w.detach(), w_ref.detach())


def test_errors_are_clear():
    w = torch.zeros(2, requires_grad=True)
    opt = LBFGS([w])
    with pytest.raises(TypeError, match="LBFGS.step\\(\\) needs a closure"):
        opt.step()
    with pytest.raises(ValueError, match="history_size"):
        LBFGS([w], history_size=0)
    with pytest.raises(ValueError, match="lr"):
        LBFGS([w], lr=-1.0)
    with pytest.raises(ValueError, match="tolerance_grad"):
        LBFGS([w], tolerance_grad=math.nan)
    with pytest.raises(ValueError, match="line_search must be one of"):
        LBFGS([w], line_search_fn="wolfe")
    with pytest.raises(TypeError, match="closure must return the loss"):
        opt.step(lambda: "one")
    with pytest.raises(TypeError, match="closure returned None"):
        opt.step(lambda: None)


def test_a_checkpoint_of_descentlab_0_1_still_loads():
    """0.1 kept s in old_dirs and y in old_stps, floats for ro and H_diag, and no
    pending pair (d, prev_flat_grad): the memory must be read the right way round."""
    loss_fn = logistic_problem(8)
    w = torch.zeros(6, requires_grad=True)
    ref = torch.optim.LBFGS([w], max_iter=4, history_size=5)
    ref.step(closure_for(ref, loss_fn, w))
    st = ref.state_dict()["state"][0]
    old = {"func_evals": st["func_evals"], "hvp_evals": 0, "n_iter": st["n_iter"],
           "line_search_failures": 0, "t": 1.0, "old_dirs": st["old_stps"],
           "old_stps": st["old_dirs"], "ro": [float(r) for r in st["ro"]],
           "H_diag": float(st["H_diag"])}
    sd = {"state": {0: old}, "param_groups": ref.state_dict()["param_groups"]}
    w2 = w.detach().clone().requires_grad_(True)
    ours = LBFGS([w2], max_iter=4, history_size=5)
    ours.load_state_dict(copy.deepcopy(sd))
    state = ours.state[w2]
    assert "hvp_evals" not in state
    assert all(torch.equal(a, b) for a, b in zip(state["old_dirs"], st["old_dirs"], strict=True))
    before = loss_fn(w2.detach()).item()
    ours.step(closure_for(ours, loss_fn, w2))
    assert loss_fn(w2.detach()).item() < before
