"""A small network trained on a fresh mini-batch each step, for the wrapper tests."""

from __future__ import annotations

from collections.abc import Callable

import torch

from tests.optim.helpers import max_rel_diff

__all__ = ["network", "loss_at", "make_closure", "train", "weights", "max_rel_diff"]


def network(dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.nn.Module:
    """A 5-8-3 tanh network (67 parameters in four tensors)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(dtype)


def loss_at(model: torch.nn.Module, step: int) -> torch.Tensor:
    """Cross-entropy on step ``step``'s mini-batch (16 samples, 3 classes)."""
    gen = torch.Generator().manual_seed(1000 + step)
    dtype = next(model.parameters()).dtype
    x = torch.randn(16, 5, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randint(0, 3, (16,), generator=gen)
    return torch.nn.functional.cross_entropy(model(x), y)


def make_closure(opt: torch.optim.Optimizer, model: torch.nn.Module, step: int,
                 calls: list[int] | None = None) -> Callable[[], torch.Tensor]:
    """The closure protocol: zero the gradients, compute the loss, backward, return the loss."""

    def closure() -> torch.Tensor:
        if calls is not None:
            calls.append(step)
        opt.zero_grad()
        loss = loss_at(model, step)
        loss.backward()
        return loss

    return closure


def train(opt: torch.optim.Optimizer, model: torch.nn.Module, steps: range,
          protocol: str = "closure") -> None:
    """Step ``opt`` over ``steps``.

    ``protocol``: ``"closure"`` (``opt.step(closure)`` alone), ``"backward"``
    (``closure(); opt.step(closure)``: pytorch_optimizer's SAM protocol) or
    ``"plain"`` (``zero_grad(); backward(); step()``).
    """
    for t in steps:
        closure = make_closure(opt, model, t)
        if protocol == "closure":
            opt.step(closure)
        elif protocol == "backward":
            closure()
            opt.step(closure)
        else:
            closure()
            opt.step()


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    """Copies of the model's parameters."""
    return [p.detach().clone() for p in model.parameters()]
