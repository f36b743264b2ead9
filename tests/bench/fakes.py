"""Small fake problems with closed-form behaviour for the benchmark tests."""

from __future__ import annotations

import torch

from descentlab.problems.base import Problem, closure_step


class QuadraticTask:
    """f(w) = ½ Σ hᵢ wᵢ², started at w₀ = 1 + 0.1·seed (deterministic, full batch)."""

    def __init__(self, h: list[float], seed: int) -> None:
        self.h = torch.tensor(h, dtype=torch.float64)
        self.w = torch.nn.Parameter(torch.full((len(h),), 1.0 + 0.1 * seed, dtype=torch.float64))
        self.position = None

    def loss(self) -> torch.Tensor:
        return 0.5 * (self.h * self.w**2).sum()

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.w]

    def train_step(self, optimizer: torch.optim.Optimizer) -> float:
        return closure_step(optimizer, self.loss)

    def evaluate(self) -> dict[str, float]:
        value = float(self.loss())
        return {"loss": value, "train_loss": value, "val_loss": value}


def build_quadratic(problem: Problem, seed: int) -> QuadraticTask:
    return QuadraticTask(list(dict(problem.config)["h"]), seed)


def quadratic_problem(
    steps: int = 40, target: float = 1e-3, eval_every: int = 1, h: tuple[float, ...] = (1.0,)
) -> Problem:
    """A fake analytic problem whose gradient-descent path is known exactly."""
    return Problem(
        name="fake_quadratic",
        version=1,
        description="½ h w² (test)",
        kind="analytic",
        steps=steps,
        batch_size=None,
        metric="loss",
        target=target,
        higher_is_better=False,
        eval_every=eval_every,
        config=(("h", h),),
        builder=build_quadratic,
    )
