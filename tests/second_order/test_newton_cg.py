"""Newton-CG: HVPs vs the exact Hessian, CG vs a direct solve, Steihaug, the optimizer."""

from __future__ import annotations

import copy

import pytest
import torch

from descentlab.linesearch._flat import evaluate_closure, hessian_vector_product
from descentlab.second_order import NewtonCG
from descentlab.second_order.newton_cg import steihaug_cg, truncated_cg


def rosen(x):
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def spd(n, seed=0, shift=1.0):
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=gen)
    return m @ m.T + shift * torch.eye(n), torch.randn(n, generator=gen)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
@pytest.mark.parametrize("style", ["loss_only", "backward_create_graph"])
def test_hvp_matches_exact_hessian_across_parameters(style):
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(3, generator=gen, requires_grad=True)
    w = torch.randn(2, 2, generator=gen, requires_grad=True)

    def fn(flat):
        a, b = flat[:3], flat[3:].view(2, 2)
        return (a**2).sum() * (b**3).sum() + torch.sin(a).prod() + (b @ b).trace()

    def closure():
        loss = fn(torch.cat([u.reshape(-1), w.reshape(-1)]))
        if style == "backward_create_graph":
            u.grad = w.grad = None
            loss.backward(create_graph=True)
        return loss

    ev = evaluate_closure(closure, [u, w], create_graph=True)
    flat = torch.cat([u.detach().reshape(-1), w.detach().reshape(-1)])
    hess = torch.autograd.functional.hessian(fn, flat)
    v = torch.randn(7, generator=gen)
    torch.testing.assert_close(hessian_vector_product(ev.graph_grads, [u, w], v), hess @ v,
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ev.g, torch.func.grad(fn)(flat), rtol=1e-12, atol=1e-12)
    assert u.grad is not None and not u.grad.requires_grad  # detached: no reference cycle


def standard_closure(opt, fn, *args):
    """The closure every other closure optimizer uses: zero grads, loss, backward()."""
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = fn(*args)
        loss.backward()
        return loss

    return closure, calls


def test_finite_difference_hvp_matches_exact_hessian():
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(6, generator=gen)
    x = x0.clone().requires_grad_(True)
    opt = NewtonCG([x])
    closure, calls = standard_closure(opt, rosen, x)
    ev = opt._evaluate(closure, create_graph=True)  # plain backward: no graph
    assert ev.graph_grads is None
    hvp = opt._hvp(ev, closure, x0)
    hess = torch.autograd.functional.hessian(rosen, x0)
    for _ in range(3):
        v = torch.randn(6, generator=gen)
        hv = hvp(v)
        assert float((hv - hess @ v).norm()) <= 1e-6 * float((hess @ v).norm())
    assert torch.equal(x.detach(), x0)  # the parameters are back at x
    assert len(calls) == 1 + 3 and opt.state[x]["hvp_evals"] == 3  # one call per product


@pytest.mark.parametrize("trust_region", [False, True])
def test_standard_closure_reaches_scipys_newton_cg_minimum(trust_region):
    """scipy's Newton-CG without hessp differences gradients too; both must reach the
    minimum of the 4-D Rosenbrock function, ours with the closure LBFGS users write."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    x0 = [-1.2, 1.0, -1.2, 1.0]
    ref = scipy_optimize.minimize(scipy_optimize.rosen, x0, jac=scipy_optimize.rosen_der,
                                  method="Newton-CG", options={"xtol": 1e-12})
    x = torch.tensor(x0, requires_grad=True)
    opt = NewtonCG([x], max_iter=300, tolerance_grad=1e-9, trust_region=trust_region)
    closure, calls = standard_closure(opt, rosen, x)
    opt.step(closure)
    torch.testing.assert_close(x.detach(), torch.tensor(ref.x), rtol=1e-6, atol=1e-6)
    st = opt.state[x]
    assert len(calls) == st["func_evals"] + st["hvp_evals"]  # every product: one call


def test_standard_closure_takes_the_autograd_newton_step_on_a_quadratic():
    a, b = spd(10, seed=4)
    results = {}
    for style in ("loss_only", "standard"):
        x = torch.zeros(10, requires_grad=True)
        opt = NewtonCG([x], max_iter=1, cg_tol=1e-12)
        if style == "loss_only":
            opt.step(lambda x=x: 0.5 * x @ a @ x - b @ x)
        else:
            opt.step(standard_closure(opt, lambda v: 0.5 * v @ a @ v - b @ v, x)[0])
        results[style] = x.detach()
    exact = torch.linalg.solve(a, b)
    torch.testing.assert_close(results["standard"], exact, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(results["loss_only"], exact, rtol=1e-8, atol=1e-9)


def test_hvp_modes():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    opt = NewtonCG([x], hvp="autograd")
    with pytest.raises(RuntimeError, match="create_graph=True"):
        opt.step(standard_closure(opt, rosen, x)[0])
    fd = NewtonCG([x], hvp="finite_difference", max_iter=50, tolerance_grad=1e-9,
                  tolerance_change=0.0)
    calls = []

    def loss_only():
        calls.append(1)
        return rosen(x)

    fd.step(loss_only)  # differences even though a graph could be had
    st = fd.state[x]
    assert st["hvp_evals"] > 0 and len(calls) == st["func_evals"] + st["hvp_evals"]
    torch.testing.assert_close(x.detach(), torch.ones(2), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="hvp must be one of"):
        NewtonCG([x], hvp="exact")


def test_truncated_cg_solves_spd_system():
    a, b = spd(12)
    p, its = truncated_cg(lambda v: a @ v, -b, tol=1e-12, max_iter=100)
    torch.testing.assert_close(p, torch.linalg.solve(a, b), rtol=1e-9, atol=1e-10)
    assert its <= 12 + 3  # n steps in exact arithmetic


def test_truncated_cg_negative_curvature_first_step_is_scaled_steepest_descent():
    h = torch.diag(torch.tensor([-2.0, 1.0]))
    g = torch.tensor([1.0, 0.0])  # g.Hg = -2 < 0 on the first CG step
    p, its = truncated_cg(lambda v: h @ v, g, tol=1e-12, max_iter=10)
    torch.testing.assert_close(p, torch.tensor([-0.5, 0.0]))  # -(g.g/|g.Hg|) g
    assert its == 1


def test_steihaug_interior_and_boundary():
    a, b = spd(6, seed=3)
    x_newton = torch.linalg.solve(a, b)
    big = 10 * float(x_newton.norm())
    p, m, _ = steihaug_cg(lambda v: a @ v, -b, big, 1e-12, 50)
    torch.testing.assert_close(p, x_newton, rtol=1e-8, atol=1e-9)
    assert m == pytest.approx(float(-b @ p + 0.5 * p @ a @ p), rel=1e-10)
    small = 0.3 * float(x_newton.norm())
    p, m, _ = steihaug_cg(lambda v: a @ v, -b, small, 1e-12, 50)
    assert float(p.norm()) == pytest.approx(small, rel=1e-10)
    assert m == pytest.approx(float(-b @ p + 0.5 * p @ a @ p), rel=1e-10)
    assert m < 0


def test_steihaug_follows_negative_curvature_to_the_boundary():
    h = torch.diag(torch.tensor([1.0, -1.0]))
    g = torch.tensor([0.0, 1e-3])
    p, m, _ = steihaug_cg(lambda v: h @ v, g, 2.0, 1e-12, 10)
    assert float(p.norm()) == pytest.approx(2.0)
    assert float(p[1]) < 0 and m < -1.0


def test_newton_cg_one_iteration_on_a_quadratic():
    a, b = spd(10, seed=4)
    x = torch.zeros(10, requires_grad=True)
    opt = NewtonCG([x], max_iter=1, cg_tol=1e-12)
    opt.step(lambda: 0.5 * x @ a @ x - b @ x)
    torch.testing.assert_close(x.detach(), torch.linalg.solve(a, b), rtol=1e-8, atol=1e-9)
    assert opt.state[x]["func_evals"] == 2  # start + the accepted Newton step
    assert opt.state[x]["hvp_evals"] >= 1


@pytest.mark.parametrize("trust_region", [False, True])
def test_rosenbrock_minimum(trust_region):
    x = torch.tensor([-1.2, 1.0, -1.2, 1.0], requires_grad=True)
    opt = NewtonCG([x], max_iter=300, tolerance_grad=1e-10, trust_region=trust_region)
    opt.step(lambda: rosen(x))
    torch.testing.assert_close(x.detach(), torch.ones(4), rtol=1e-7, atol=1e-7)


def test_trust_region_state_dict_resume_is_exact():
    x = torch.tensor([-1.2, 1.0], requires_grad=True)
    opt = NewtonCG([x], max_iter=4, trust_region=True, radius=0.5)
    opt.step(lambda: rosen(x))
    sd = copy.deepcopy(opt.state_dict())
    x2 = x.detach().clone().requires_grad_(True)
    opt2 = NewtonCG([x2], max_iter=4, trust_region=True, radius=0.5)
    opt2.load_state_dict(sd)
    assert opt2.state[x2]["radius"] == opt.state[x]["radius"]
    for _ in range(3):
        opt.step(lambda: rosen(x))
        opt2.step(lambda: rosen(x2))
    torch.testing.assert_close(x2.detach(), x.detach(), rtol=0, atol=0)


def test_two_groups_match_one_group():
    a, b = spd(6, seed=5)
    x = torch.zeros(6, requires_grad=True)
    one = NewtonCG([x], max_iter=3)
    one.step(lambda: 0.5 * x @ a @ x - b @ x)
    u = torch.zeros(2, requires_grad=True)
    v = torch.zeros(4, requires_grad=True)
    two = NewtonCG([{"params": [u]}, {"params": [v]}], max_iter=3)

    def closure():
        z = torch.cat([u, v])
        return 0.5 * z @ a @ z - b @ z

    two.step(closure)
    torch.testing.assert_close(torch.cat([u, v]).detach(), x.detach(), rtol=0, atol=1e-13)


def test_errors():
    x = torch.zeros(2, requires_grad=True)
    with pytest.raises(TypeError, match="needs a closure"):
        NewtonCG([x]).step()
    with pytest.raises(ValueError, match="radius"):
        NewtonCG([x], radius=-1.0)
    with pytest.raises(ValueError, match="eta"):
        NewtonCG([x], eta=0.5)
    with pytest.raises(ValueError, match="cg_tol"):
        NewtonCG([x], cg_tol=2.0)
    with pytest.raises(TypeError, match="trust_region"):
        NewtonCG([x], trust_region="yes")


def test_hvp_through_an_nn_module_matches_functional_hessian():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    model = model.double()
    data, target = torch.randn(16, 4), torch.randint(0, 2, (16,))
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    params = list(model.parameters())

    def loss_of(flat):
        chunks, offset = {}, 0
        for n, s in zip(names, shapes, strict=True):
            k = s.numel()
            chunks[n] = flat[offset:offset + k].view(s)
            offset += k
        out = torch.func.functional_call(model, chunks, (data,))
        return torch.nn.functional.cross_entropy(out, target)

    ev = evaluate_closure(
        lambda: torch.nn.functional.cross_entropy(model(data), target), params, create_graph=True
    )
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    hess = torch.autograd.functional.hessian(loss_of, flat)
    v = torch.randn(flat.numel())
    torch.testing.assert_close(hessian_vector_product(ev.graph_grads, params, v), hess @ v,
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("trust_region", [False, True])
def test_newton_cg_trains_a_small_network_monotonically(trust_region):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 3)).double()
    data, target = torch.randn(64, 4), torch.randint(0, 3, (64,))
    opt = NewtonCG(model.parameters(), max_iter=1, trust_region=trust_region)

    def closure():
        return torch.nn.functional.cross_entropy(model(data), target)

    with torch.no_grad():
        losses = [float(closure())]
    for _ in range(30):
        opt.step(closure)
        with torch.no_grad():
            losses.append(float(closure()))
    assert all(b <= a for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] < 0.5 * losses[0]
