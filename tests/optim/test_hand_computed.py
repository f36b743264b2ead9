"""The first two steps of every algorithm, computed by hand from the published equations.

The objective is f(θ) = ½ θ² on a scalar start θ₀ = 1 (so g = θ), plus a
second coordinate θ₀ = −2 to catch sign errors. Each expected value below
follows the equations in the optimizer's docstring with plain Python floats.
"""

from __future__ import annotations

import math

import pytest
import torch

import descentlab
from tests.optim.engines import ENGINES_UNDER_TEST

START = [1.0, -2.0]


def two_steps(opt_cls, engine, **kw) -> list[list[float]]:
    theta = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    opt = opt_cls([theta], engine=engine, **kw)
    out = []
    for _ in range(2):
        opt.zero_grad()
        (0.5 * theta**2).sum().backward()
        opt.step()
        out.append(theta.detach().tolist())
    return out


def expected(update) -> list[list[float]]:
    """Apply a per-coordinate ``update(theta, g, state, t) -> theta`` twice to each start."""
    results = [[], []]
    for x in START:
        state: dict = {}
        for t in (1, 2):
            x = update(x, x, state, t)
            results[t - 1].append(x)
    return results


def sgd_momentum(lr, beta, damp=0.0, nesterov=False, wd=0.0):
    def update(x, g, s, t):
        g = g + wd * x
        s["v"] = g if t == 1 else beta * s["v"] + (1 - damp) * g
        d = g + beta * s["v"] if nesterov else s["v"]
        return x - lr * d

    return update


def adam(lr, b1, b2, eps, amsgrad=False, wd=0.0, decoupled=False):
    def update(x, g, s, t):
        if decoupled:
            x = x * (1 - lr * wd)
        else:
            g = g + wd * x
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        v = max(s.get("vmax", 0.0), s["v"]) if amsgrad else s["v"]
        s["vmax"] = v
        return x - lr / (1 - b1**t) * s["m"] / (math.sqrt(v) / math.sqrt(1 - b2**t) + eps)

    return update


def adagrad(lr, lr_decay, eps, init=0.0):
    def update(x, g, s, t):
        s["s"] = s.get("s", init) + g * g
        return x - lr / (1 + (t - 1) * lr_decay) * g / (math.sqrt(s["s"]) + eps)

    return update


def rmsprop(lr, alpha, eps, momentum=0.0, centered=False):
    def update(x, g, s, t):
        s["s"] = alpha * s.get("s", 0.0) + (1 - alpha) * g * g
        s["m"] = alpha * s.get("m", 0.0) + (1 - alpha) * g
        var = s["s"] - s["m"] ** 2 if centered else s["s"]
        step = g / (math.sqrt(var) + eps)
        if momentum:
            s["b"] = momentum * s.get("b", 0.0) + step
            step = s["b"]
        return x - lr * step

    return update


def adadelta(lr, rho, eps):
    def update(x, g, s, t):
        s["s"] = rho * s.get("s", 0.0) + (1 - rho) * g * g
        delta = math.sqrt(s.get("u", 0.0) + eps) / math.sqrt(s["s"] + eps) * g
        s["u"] = rho * s.get("u", 0.0) + (1 - rho) * delta**2
        return x - lr * delta

    return update


def nadam(lr, b1, b2, eps, psi):
    def update(x, g, s, t):
        mu = b1 * (1 - 0.5 * 0.96 ** (t * psi))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        s["prod"] = s.get("prod", 1.0) * mu
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        d = math.sqrt(s["v"] / (1 - b2**t)) + eps
        return (
            x
            - lr * (1 - mu) / (1 - s["prod"]) * g / d
            - lr * mu_next / (1 - s["prod"] * mu_next) * s["m"] / d
        )

    return update


def radam(lr, b1, b2, eps):
    def update(x, g, s, t):
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        m_hat = s["m"] / (1 - b1**t)
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho_t <= 5:
            return x - lr * m_hat
        r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        return x - lr * m_hat * r * math.sqrt(1 - b2**t) / (math.sqrt(s["v"]) + eps)

    return update


def adamax(lr, b1, b2, eps):
    def update(x, g, s, t):
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["u"] = max(b2 * s.get("u", 0.0), abs(g) + eps)
        return x - lr / (1 - b1**t) * s["m"] / s["u"]

    return update


CASES = {
    "gd": (descentlab.SGD, {"lr": 0.1}, lambda x, g, s, t: x - 0.1 * g),
    "gd-weight-decay": (
        descentlab.SGD,
        {"lr": 0.1, "weight_decay": 0.5},
        lambda x, g, s, t: x - 0.1 * (g + 0.5 * x),
    ),
    "heavy-ball": (descentlab.SGD, {"lr": 0.1, "momentum": 0.9}, sgd_momentum(0.1, 0.9)),
    "dampening": (
        descentlab.SGD,
        {"lr": 0.1, "momentum": 0.9, "dampening": 0.5},
        sgd_momentum(0.1, 0.9, damp=0.5),
    ),
    "nesterov": (
        descentlab.SGD,
        {"lr": 0.1, "momentum": 0.9, "nesterov": True},
        sgd_momentum(0.1, 0.9, nesterov=True),
    ),
    "adagrad": (
        descentlab.Adagrad,
        {"lr": 0.5, "lr_decay": 0.1, "initial_accumulator_value": 0.2},
        adagrad(0.5, 0.1, 1e-10, 0.2),
    ),
    "rmsprop": (descentlab.RMSprop, {"lr": 0.01}, rmsprop(0.01, 0.99, 1e-8)),
    "rmsprop-centered-momentum": (
        descentlab.RMSprop,
        {"lr": 0.01, "centered": True, "momentum": 0.9},
        rmsprop(0.01, 0.99, 1e-8, momentum=0.9, centered=True),
    ),
    "adadelta": (descentlab.Adadelta, {}, adadelta(1.0, 0.9, 1e-6)),
    "adam": (descentlab.Adam, {"lr": 0.1}, adam(0.1, 0.9, 0.999, 1e-8)),
    "amsgrad": (
        descentlab.Adam,
        {"lr": 0.1, "amsgrad": True, "weight_decay": 0.3},
        adam(0.1, 0.9, 0.999, 1e-8, amsgrad=True, wd=0.3),
    ),
    "adamw": (
        descentlab.AdamW,
        {"lr": 0.1, "weight_decay": 0.3},
        adam(0.1, 0.9, 0.999, 1e-8, wd=0.3, decoupled=True),
    ),
    "nadam": (descentlab.NAdam, {"lr": 0.1}, nadam(0.1, 0.9, 0.999, 1e-8, 4e-3)),
    "radam-early": (descentlab.RAdam, {"lr": 0.1}, radam(0.1, 0.9, 0.999, 1e-8)),
    # with β₂ = 0.5, ρ∞ = 3 < 5: never rectified; with β₂ = 0.99 the rectified branch needs t > 5
    "radam-small-beta2": (
        descentlab.RAdam,
        {"lr": 0.1, "betas": (0.9, 0.5)},
        radam(0.1, 0.9, 0.5, 1e-8),
    ),
    "adamax": (descentlab.Adamax, {"lr": 0.1}, adamax(0.1, 0.9, 0.999, 1e-8)),
}


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("name", list(CASES))
def test_first_two_steps(name, engine):
    cls, kw, update = CASES[name]
    got = two_steps(cls, engine, **kw)
    want = expected(update)
    for g_row, w_row in zip(got, want, strict=True):
        assert g_row == pytest.approx(w_row, rel=1e-14, abs=1e-15)


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
def test_radam_rectified_branch_by_hand(engine):
    """Run RAdam past ρₜ > 5 (β₂ = 0.9 rectifies from t = 6) and check step 7 by hand."""
    update = radam(0.01, 0.9, 0.9, 1e-8)
    theta = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    opt = descentlab.RAdam([theta], lr=0.01, betas=(0.9, 0.9), engine=engine)
    xs, state = list(START), [{}, {}]
    for t in range(1, 8):
        opt.zero_grad()
        (0.5 * theta**2).sum().backward()
        opt.step()
        xs = [update(x, x, s, t) for x, s in zip(xs, state, strict=True)]
    assert theta.detach().tolist() == pytest.approx(xs, rel=1e-13)


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("nesterov", [False, True])
def test_averaged_momentum_form_by_hand(engine, nesterov):
    """v₀ = 0, v ← βv + (1 − β)g, θ ← θ − ηv (seed 003), and its Nesterov look-ahead."""
    lr, beta = 0.1, 0.8
    theta = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    opt = descentlab.SGD(
        [theta], lr=lr, momentum=beta, nesterov=nesterov, momentum_form="averaged", engine=engine
    )
    xs, vs = list(START), [0.0, 0.0]
    for _ in range(5):
        opt.zero_grad()
        (0.5 * theta**2).sum().backward()
        opt.step()
        for i, x in enumerate(xs):
            g = x
            vs[i] = beta * vs[i] + (1 - beta) * g
            d = (1 - beta) * g + beta * vs[i] if nesterov else vs[i]
            xs[i] = x - lr * d
        assert theta.detach().tolist() == pytest.approx(xs, rel=1e-14)
