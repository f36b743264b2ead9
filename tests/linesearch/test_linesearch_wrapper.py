"""WithLineSearch around torch optimizers; stochastic Armijo in mini-batch training."""

from __future__ import annotations

import copy

import pytest
import torch

from descentlab.linesearch import Armijo, StochasticArmijo, StrongWolfe, WithLineSearch
from descentlab.second_order import LineSearchGD


def quadratic(n: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=gen)
    a = m @ m.T + 0.1 * torch.eye(n)
    b = torch.randn(n, generator=gen)
    x_star = torch.linalg.solve(a, b)
    return a, b, x_star


def make_closure(opt, x, a, b, counter=None):
    def closure():
        opt.zero_grad()
        loss = 0.5 * x @ a @ x - b @ x
        loss.backward()
        if counter is not None:
            counter[0] += 1
        return loss

    return closure


def test_accepted_full_step_equals_plain_sgd_step():
    a, b, _ = quadratic()
    x_ref = torch.zeros(5, requires_grad=True)
    sgd = torch.optim.SGD([x_ref], lr=1e-3)
    sgd.step(make_closure(sgd, x_ref, a, b))
    x = torch.zeros(5, requires_grad=True)
    wrapped = WithLineSearch(torch.optim.SGD([x], lr=1e-3), Armijo())
    wrapped.step(make_closure(wrapped, x, a, b))
    torch.testing.assert_close(x.detach(), x_ref.detach(), rtol=0, atol=1e-15)
    assert wrapped.func_evals == 2 and wrapped.last_step == 1.0


def test_wrapper_tames_a_divergent_learning_rate():
    a, b, x_star = quadratic()
    lmax = float(torch.linalg.eigvalsh(a).max())
    lr = 5.0 / lmax  # plain SGD diverges for lr > 2 / lambda_max
    x_plain = torch.zeros(5, requires_grad=True)
    plain = torch.optim.SGD([x_plain], lr=lr)
    x = torch.zeros(5, requires_grad=True)
    wrapped = WithLineSearch(torch.optim.SGD([x], lr=lr), "armijo")
    for _ in range(300):
        plain.step(make_closure(plain, x_plain, a, b))
        wrapped.step(make_closure(wrapped, x, a, b))
    x_plain = x_plain.detach()
    assert not torch.isfinite(x_plain).all() or float((x_plain - x_star).norm()) > 1e3
    assert float((x.detach() - x_star).norm()) < 1e-3


@pytest.mark.parametrize("inner", ["adam", "rmsprop", "sgd_momentum"])
def test_wrapper_with_other_torch_optimizers_is_monotone(inner):
    a, b, _ = quadratic()
    x = torch.zeros(5, requires_grad=True)
    base = {"adam": lambda: torch.optim.Adam([x], lr=0.5),
            "rmsprop": lambda: torch.optim.RMSprop([x], lr=0.5),
            "sgd_momentum": lambda: torch.optim.SGD([x], lr=0.05, momentum=0.9)}[inner]()
    wrapped = WithLineSearch(base, StrongWolfe(c2=0.9))
    losses = []
    for _ in range(30):
        losses.append(float(wrapped.step(make_closure(wrapped, x, a, b)).detach()))
    assert all(l1 <= l0 + 1e-12 for l0, l1 in zip(losses, losses[1:], strict=False))
    assert losses[-1] < losses[0]


def test_wrapper_state_dict_round_trip():
    a, b, _ = quadratic()
    x = torch.zeros(5, requires_grad=True)
    wrapped = WithLineSearch(torch.optim.Adam([x], lr=0.1))
    for _ in range(3):
        wrapped.step(make_closure(wrapped, x, a, b))
    sd = copy.deepcopy(wrapped.state_dict())  # torch's state_dict shares its tensors
    x2 = x.detach().clone().requires_grad_(True)
    other = WithLineSearch(torch.optim.Adam([x2], lr=0.1))
    other.load_state_dict(sd)
    for _ in range(3):
        wrapped.step(make_closure(wrapped, x, a, b))
        other.step(make_closure(other, x2, a, b))
    torch.testing.assert_close(x2.detach(), x.detach(), rtol=0, atol=0)


def test_full_relaxation_search_with_the_standard_closure():
    """d^T H d by a difference of gradients (one extra closure call): on a quadratic the
    first trial is the exact minimiser along SGD's direction, which the search accepts."""
    a, b, _ = quadratic()
    x = torch.zeros(5, requires_grad=True)
    wrapped = WithLineSearch(torch.optim.SGD([x], lr=1e-3), "full_relaxation")
    calls = [0]
    wrapped.step(make_closure(wrapped, x, a, b, calls))
    g = -b  # the gradient at 0
    expected = -float(g @ g) / float(g @ a @ g) * g
    torch.testing.assert_close(x.detach(), expected, rtol=1e-6, atol=1e-9)
    assert calls[0] == wrapped.func_evals == 3  # start, the difference, the accepted trial


def test_wrapper_errors():
    x = torch.zeros(2, requires_grad=True)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        WithLineSearch(object())
    wrapped = WithLineSearch(torch.optim.SGD([x], lr=0.1))
    with pytest.raises(TypeError, match="needs a closure"):
        wrapped.step()
    with pytest.raises(ValueError, match="line_search must be one of"):
        WithLineSearch(torch.optim.SGD([x], lr=0.1), "bogus")


def test_stochastic_armijo_trains_least_squares_with_minibatches():
    """Interpolation setting of Vaswani et al.: a consistent linear system. SGD with the
    stochastic Armijo search drives the full loss to ~0 without tuning a step size."""
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(256, 10, generator=gen)
    w_true = torch.randn(10, generator=gen)
    target = data @ w_true
    w = torch.zeros(10, requires_grad=True)
    batches = 8
    opt = LineSearchGD([w], lr=1.0, line_search=StochasticArmijo(batches_per_epoch=batches))
    full0 = float(((data @ w.detach() - target) ** 2).mean())
    for _epoch in range(15):
        perm = torch.randperm(256, generator=gen)
        for k in range(batches):
            idx = perm[k * 32:(k + 1) * 32]

            def closure(idx=idx):
                opt.zero_grad()
                loss = ((data[idx] @ w - target[idx]) ** 2).mean()
                loss.backward()
                return loss

            opt.step(closure)
    full = float(((data @ w.detach() - target) ** 2).mean())
    assert full < 1e-8 * full0
    state = opt.state[w]
    assert state["line_search_failures"] == 0 and state["t"] > 0


def _descentlab_optimizers():
    import descentlab

    names = getattr(descentlab, "available_optimizers", lambda: [])()
    # SparseAdam takes sparse gradients only; SophiaH and AdaHessian need Hessian-vector
    # products at their steps, and the wrapper steps the inner optimizer without a closure;
    # Muon takes 2-D parameters only (the quadratic's x is a vector)
    return [n for n in names if n not in ("sparse_adam", "sophiah", "adahessian", "muon")]


@pytest.mark.parametrize("name", _descentlab_optimizers())
def test_wrapper_with_every_descentlab_optimizer(name):
    import descentlab

    a, b, x_star = quadratic()
    x = torch.zeros(5, requires_grad=True)
    inner = descentlab.make_optimizer(name, [x], lr=0.1)
    descentlab.schedule_free.start_training(inner)  # Schedule-Free steps in train mode only
    wrapped = WithLineSearch(inner, "armijo")
    closure = make_closure(wrapped, x, a, b)
    losses = [float(wrapped.step(closure).detach()) for _ in range(25)]
    assert all(l1 <= l0 + 1e-12 for l0, l1 in zip(losses, losses[1:], strict=False))
    assert losses[-1] < losses[0]
