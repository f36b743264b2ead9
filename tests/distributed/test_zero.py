"""``ZeroRedundancyOptimizer(params, optimizer_class=descentlab.X)`` for every elementwise X.

2 ranks under DDP; the result must equal torch.optim.X on one process with
the ranks' batches averaged (float64), and a run resumed from the
consolidated state dict must continue identically.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from descentlab.distributed import run_ranks
from tests.distributed.zero_ranks import SETTINGS, run_zero, single_process

WORLD = 2
CASES = [(name, False, None) for name in SETTINGS] + [
    (name, True, "reference") for name in SETTINGS] + [("adam", True, None), ("sgd", True, None)]


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    """Every case on both ranks, from one launch."""
    return run_ranks(run_zero, WORLD, CASES, timeout=240, start_method="fork",
                     preload=("torch._dynamo",))


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", list(SETTINGS))
def test_zero_equals_single_process(results: list[dict[str, Any]], name: str) -> None:
    expected = single_process(name, WORLD)
    for key in (f"{name}/False/None", f"{name}/True/reference"):
        assert torch.equal(results[0][key], results[1][key]), key
        assert _max_rel(results[0][key], expected) < 1e-13, key


@pytest.mark.parametrize("name", list(SETTINGS))
def test_zero_resumes_from_consolidated_state(results: list[dict[str, Any]], name: str) -> None:
    for rank in results:
        assert torch.equal(rank[f"{name}/resumed"], rank[f"{name}/False/None"])


def test_zero_bucket_view_with_the_flat_engine(results: list[dict[str, Any]]) -> None:
    """ZeRO's bucket views share storage: the engine leaves those parameters where they are."""
    for name in ("adam", "sgd"):
        key = f"{name}/True/None"
        assert torch.equal(results[0][key], results[1][key])
        assert _max_rel(results[0][key], single_process(name, WORLD)) < 1e-13


@pytest.mark.parametrize("engine", ["flat", "reference"])
def test_state_written_into_optimizer_state_is_used(engine: str) -> None:
    """What ZeroRedundancyOptimizer.load_state_dict does to its local optimizer: assign
    ``optimizer.state[p]`` directly after construction. torch.optim uses that state."""
    import descentlab

    torch.manual_seed(0)
    start = [torch.randn(5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    given = [{"step": torch.tensor(4.0), "exp_avg": torch.full_like(s, 0.3),
              "exp_avg_sq": torch.full_like(s, 0.02)} for s in start]
    finals = []
    for cls, extra in ((torch.optim.Adam, {}), (descentlab.Adam, {"engine": engine})):
        params = [torch.nn.Parameter(s.clone()) for s in start]
        opt = cls(params, lr=0.1, **extra)
        for p, state in zip(params, given, strict=True):
            opt.state[p] = {k: v.clone() for k, v in state.items()}
        for _ in range(2):
            for p in params:
                p.grad = torch.ones_like(p)
            opt.step()
        finals.append(torch.cat([p.detach() for p in params]))
    assert _max_rel(finals[1], finals[0]) < 1e-14
