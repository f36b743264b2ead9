"""Loss landscapes against closed forms; filter normalisation against torch norms."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from torch import nn

from descentlab.diagnostics.landscape import (
    interpolate,
    loss_surface,
    pca_directions,
    project_path,
    random_direction,
    to_vector,
)

matplotlib.use("Agg")


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 3, generator=g, dtype=torch.float64)
    y = torch.randn(32, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(3, 1).double()
    return model, x, y, lambda: nn.functional.mse_loss(model(x), y)


def _mse_at(theta, x, y):
    w, b = theta[:3], theta[3]
    return float(((x @ w + b - y[:, 0]) ** 2).mean())


def test_filter_normalised_direction_matches_filter_norms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 5))
    d = random_direction(model, seed=1)
    i = 0
    for p in model.parameters():
        part = d[i : i + p.numel()].view_as(p)
        i += p.numel()
        if p.dim() <= 1:
            assert torch.all(part == 0)
        else:
            torch.testing.assert_close(
                torch.linalg.vector_norm(part.flatten(1), dim=1),
                torch.linalg.vector_norm(p.detach().flatten(1), dim=1),
            )
    d2 = random_direction(model, seed=1, ignore_1d=False)
    assert float(d2.abs().sum()) > float(d.abs().sum())


def test_interpolation_matches_closed_form_and_restores():
    model, x, y, loss = _problem()
    a = to_vector(model)
    b = a + torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    line = interpolate(model, model.state_dict(), b, loss, alphas=[-0.5, 0.0, 0.3, 1.0])
    for alpha, got in zip(line.alphas, line.losses, strict=True):
        want = _mse_at((1 - alpha) * a + alpha * b, x, y)
        assert float(got) == pytest.approx(want, rel=1e-10)
    torch.testing.assert_close(to_vector(model), a)
    assert line.plot() is not None


def test_surface_matches_closed_form_and_restores():
    model, x, y, loss = _problem()
    c = to_vector(model)
    d1 = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    d2 = torch.tensor([0.0, 0.5, 0.5, 0.0], dtype=torch.float64)
    surf = loss_surface(model, loss, d1, d2, span=(-2, 2), resolution=5)
    for j, yy in enumerate(surf.ys):
        for i, xx in enumerate(surf.xs):
            want = _mse_at(c + xx * d1 + yy * d2, x, y)
            assert float(surf.losses[j, i]) == pytest.approx(want, rel=1e-10)
    torch.testing.assert_close(to_vector(model), c)


def test_path_projection_and_pca_on_a_real_gd_path():
    model, x, y, loss = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = [to_vector(model)]
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
        path.append(to_vector(model))
    d1, d2, explained = pca_directions(path)
    assert float(d1 @ d2) == pytest.approx(0.0, abs=1e-10)
    assert float(d1.norm()) == pytest.approx(1.0)
    assert float(explained.sum()) > 0.95  # a GD path on a 4-d quadratic is nearly planar
    coords = project_path(path, path[-1], d1, d2)
    assert coords.shape == (31, 2)
    torch.testing.assert_close(coords[-1], torch.zeros(2, dtype=torch.float64))
    surf = loss_surface(model, loss, d1, d2, center=path[-1], span=(-3, 3), resolution=6)
    ax = surf.plot(path=coords)
    assert ax.get_xlabel() == "direction 1"


def test_projection_is_exact_in_plane_with_oblique_directions():
    g = torch.Generator().manual_seed(0)
    c, d1, d2 = (torch.randn(50, generator=g, dtype=torch.float64) for _ in range(3))
    coef = torch.randn(7, 2, generator=g, dtype=torch.float64)
    pts = [c + a * d1 + b * d2 for a, b in coef]
    torch.testing.assert_close(project_path(pts, c, d1, d2), coef)


def test_errors():
    model, x, y, loss = _problem()
    with pytest.raises(ValueError, match="shape"):
        to_vector(model, torch.zeros(3))
    with pytest.raises(ValueError, match="lacks"):
        to_vector(model, {"weight": torch.zeros(1, 3)})
    with pytest.raises(ValueError, match="span"):
        loss_surface(model, loss, span=(1.0, -1.0))
    with pytest.raises(ValueError, match="resolution"):
        loss_surface(model, loss, resolution=1)
    with pytest.raises(ValueError, match="trajectory"):
        pca_directions([to_vector(model)])
