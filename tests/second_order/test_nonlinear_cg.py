"""Nonlinear CG: beta formulas by hand, linear-CG equivalence with exact line search."""

from __future__ import annotations

import copy

import pytest
import torch

from descentlab.linesearch import FullRelaxation, StrongWolfe
from descentlab.second_order import NonlinearCG
from descentlab.second_order.nonlinear_cg import CG_VARIANTS, cg_beta


def rosen(x):
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def test_beta_formulas_by_hand():
    g = torch.tensor([1.0, 2.0])
    g_new = torch.tensor([3.0, -1.0])
    d = torch.tensor([-1.0, -1.0])
    # y = g_new - g = (2, -3); g.g = 5; g_new.g_new = 10; g_new.y = 9; d.y = 1; y.y = 13;
    # d.g_new = -2
    assert cg_beta("FR", g_new, g, d) == pytest.approx(10 / 5)
    assert cg_beta("PR", g_new, g, d) == pytest.approx(9 / 5)
    assert cg_beta("PR+", g_new, g, d) == pytest.approx(9 / 5)
    # g_new = (0.5, 0): y = (-0.5, -2), g_new.y = -0.25 < 0, so PR+ clips to 0
    assert cg_beta("PR+", torch.tensor([0.5, 0.0]), g, d) == 0.0
    assert cg_beta("HS", g_new, g, d) == pytest.approx(9 / 1)
    assert cg_beta("DY", g_new, g, d) == pytest.approx(10 / 1)
    # HZ: (y.g_new - 2 y.y d.g_new / d.y) / d.y = 9 + 52 = 61
    assert cg_beta("HZ", g_new, g, d) == pytest.approx(61.0)
    with pytest.raises(ValueError, match="variant"):
        cg_beta("XX", g_new, g, d)


@pytest.mark.parametrize("variant", ["FR", "PR", "PR+", "HS", "DY", "HZ"])
def test_exact_line_search_on_quadratic_is_linear_cg(variant):
    """With exact line searches every formula reduces to linear CG (N&W sec. 5.2), which
    solves an n-dimensional SPD system in n iterations. The full-relaxation search takes
    the exact step on a quadratic."""
    n = 8
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(n, n, generator=gen)
    a, b = m @ m.T + torch.eye(n), torch.randn(n, generator=gen)
    x = torch.zeros(n, requires_grad=True)
    opt = NonlinearCG([x], variant=variant, max_iter=n, line_search=FullRelaxation(),
                      powell_restart=False, tolerance_grad=0.0, tolerance_change=0.0)
    opt.step(lambda: 0.5 * x @ a @ x - b @ x)
    torch.testing.assert_close(x.detach(), torch.linalg.solve(a, b), rtol=1e-7, atol=1e-8)
    assert opt.state[x]["n_iter"] <= n


@pytest.mark.parametrize("variant", CG_VARIANTS)
def test_variants_minimise_rosenbrock(variant):
    x = torch.tensor([-1.2, 1.0], requires_grad=True)
    search = StrongWolfe(c2=0.1) if variant in ("FR", "DY") else None
    opt = NonlinearCG([x], variant=variant, max_iter=3000, max_eval=20000, line_search=search,
                      tolerance_grad=1e-9, tolerance_change=0.0)
    opt.step(lambda: rosen(x))
    torch.testing.assert_close(x.detach(), torch.ones(2), rtol=1e-6, atol=1e-6)


def test_restart_every_n_counts():
    x = torch.tensor([-1.2, 1.0, -1.2, 1.0], requires_grad=True)
    opt = NonlinearCG([x], max_iter=40, restart_every=3, powell_restart=False)
    opt.step(lambda: rosen(x))
    st = opt.state[x]
    assert st["restarts"] >= st["n_iter"] // 3 - 1


def test_state_dict_resume_is_exact():
    x = torch.tensor([-1.2, 1.0], requires_grad=True)
    opt = NonlinearCG([x], max_iter=5)
    opt.step(lambda: rosen(x))
    sd = copy.deepcopy(opt.state_dict())
    x2 = x.detach().clone().requires_grad_(True)
    opt2 = NonlinearCG([x2], max_iter=5)
    opt2.load_state_dict(sd)
    for _ in range(3):
        opt.step(lambda: rosen(x))
        opt2.step(lambda: rosen(x2))
    torch.testing.assert_close(x2.detach(), x.detach(), rtol=0, atol=0)


def test_errors():
    x = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="variant"):
        NonlinearCG([x], variant="CD")
    with pytest.raises(TypeError, match="needs a closure"):
        NonlinearCG([x]).step()
    with pytest.raises(ValueError, match="restart_every"):
        NonlinearCG([x], restart_every=0)
