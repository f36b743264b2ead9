"""Shared fixtures: one thread (the machine is shared), small networks with exact Hessians."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from tests.browser import driver  # noqa: F401 (headless Chromium for the browser tests)
from tests.threads import one_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


class SmallNet:
    """A tiny tanh MLP on a fixed batch, with its exact Hessian via autograd.functional."""

    def __init__(self, seed: int = 0, sizes: tuple[int, ...] = (4, 6, 3), n: int = 16):
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:], strict=False):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.model = nn.Sequential(*layers[:-1]).double()
        self.x = torch.randn(n, sizes[0], generator=g, dtype=torch.float64)
        self.y = torch.randint(0, sizes[-1], (n,), generator=g)
        self.params = list(self.model.parameters())
        self.names = [k for k, _ in self.model.named_parameters()]
        self.shapes = [p.shape for p in self.params]

    def loss(self) -> torch.Tensor:
        return nn.functional.cross_entropy(self.model(self.x), self.y)

    def _loss_flat(self, flat: torch.Tensor) -> torch.Tensor:
        tensors, i = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            k = shape.numel()
            tensors[name] = flat[i : i + k].view(shape)
            i += k
        return nn.functional.cross_entropy(functional_call(self.model, tensors, (self.x,)), self.y)

    def exact_hessian(self) -> torch.Tensor:
        flat = torch.cat([p.detach().reshape(-1) for p in self.params])
        return torch.autograd.functional.hessian(self._loss_flat, flat)


@pytest.fixture
def small_net() -> SmallNet:
    return SmallNet()


@pytest.fixture
def make_net():
    """The :class:`SmallNet` class, to build nets with other seeds and sizes."""
    return SmallNet
