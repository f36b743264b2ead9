"""Optimizers under FSDP2 (``fully_shard``), 2 real ranks on gloo, against one process.

Elementwise rules run on the local shards in flat buffers (the flat and
compiled engines), keep torch.optim's FSDP2 state layout (DTensor moments),
and checkpoints move both ways with torch.optim.AdamW through
``torch.distributed.checkpoint``. Tensor rules (Muon, SOAP, Shampoo, MARS)
assemble each
matrix on its owning rank. Float64; the model has row counts that do not
divide by the world size. Tolerance: 1e-14 relative (measured ≤ 3e-16: the
reduce-scatter averages in another order than one process's backward).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from descentlab.distributed import run_ranks
from tests.distributed.fsdp2_ranks import (
    ELEMENTWISE,
    MATRIX,
    STEPS,
    flat,
    matrix_params,
    model,
    run_fsdp2,
    schedule_free_run,
    single,
    train,
)

WORLD, TOL = 2, 1e-14


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    """Every scenario on both ranks, from one launch."""
    return run_ranks(run_fsdp2, WORLD, timeout=600, start_method="fork",
                     preload=("torch._dynamo",))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_elementwise_on_local_shards_equals_one_process(
    results: list[dict[str, Any]], name: str
) -> None:
    ours, theirs, setting = ELEMENTWISE[name]
    expected_ours = single(lambda p: ours(p, engine="reference", **setting))
    expected_torch = single(lambda p: theirs(p, **setting))
    assert results[0][f"{name}/mirrored"]  # the flat engine stepped every shard in its buffers
    for label in ("reference", "flat", "compiled", "auto"):
        key = f"{name}/{label}"
        if key not in results[0]:
            continue
        assert torch.equal(results[0][key], results[1][key]), key
        assert _rel(results[0][key], expected_ours) < TOL, key
        if label == "flat":  # the same arithmetic as the per-tensor loop on DTensors
            assert torch.equal(results[0][key], results[0][f"{name}/reference"])
    assert _rel(results[0][f"{name}/torch"], expected_torch) < TOL


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_state_layout_is_torchs_under_fsdp2(results: list[dict[str, Any]], name: str) -> None:
    state = results[0][f"{name}/state"]
    assert state.pop("step") == ("Tensor", False)
    assert state and all(v == ("DTensor", True) for v in state.values()), state


@pytest.mark.parametrize("case", ["ours->torch", "torch->ours", "ours->ours", "torch.save",
                                  "assigned"])
def test_checkpoints_move_between_ours_and_torch(results: list[dict[str, Any]], case: str) -> None:
    expected = single(lambda p: torch.optim.AdamW(p, **ELEMENTWISE["adamw"][2]))
    for rank in results:
        assert _rel(rank[case], expected) < TOL, case


@pytest.mark.parametrize("engine", ["reference", "flat"])
def test_schedule_free_steps_and_swaps_on_local_shards(
    results: list[dict[str, Any]], engine: str
) -> None:
    expected = schedule_free_run(model(), "reference", slice(None))
    key = f"schedule_free/{engine}"
    for got, want in zip(results[0][key], expected, strict=True):  # y, x (eval), y again
        assert _rel(got, want) < TOL, key
    assert all(torch.equal(a, b) for a, b in zip(results[0][key], results[1][key], strict=True))


def _single_matrix(name: str) -> torch.Tensor:
    cls, setting = MATRIX[name]
    m = model()
    train(m, cls(matrix_params(name, m), engine="reference", **setting), range(STEPS), slice(None))
    return flat(m)


@pytest.mark.parametrize("name", list(MATRIX))
def test_matrices_assembled_per_owner_equal_one_process(
    results: list[dict[str, Any]], name: str
) -> None:
    expected = _single_matrix(name)
    for mode in ("owner", "everywhere"):
        for engine in ("reference", "flat"):
            key = f"{name}/{mode}/{engine}"
            assert torch.equal(results[0][key], results[1][key]), key
            assert _rel(results[0][key], expected) < TOL, key


@pytest.mark.parametrize("name", list(MATRIX))
def test_matrix_state_resumes_from_each_ranks_state_dict(
    results: list[dict[str, Any]], name: str
) -> None:
    for rank in results:
        assert torch.equal(rank[f"{name}/resumed"], rank[f"{name}/owner/flat"])


def test_muon_param_groups_finds_hidden_matrices_under_fsdp2(
    results: list[dict[str, Any]]
) -> None:
    rows = {words[0]: next(w for w in words if w in ("muon", "adamw"))
            for words in map(str.split, results[0]["muon/groups"].splitlines()[1:])}
    assert rows == {"0.weight": "muon", "0.bias": "adamw", "2.weight": "muon",
                    "2.bias": "adamw", "4.weight": "adamw", "4.bias": "adamw"}


@pytest.mark.parametrize("case,placement", [("shard1", "Shard(dim=1)"),
                                            ("hsdp", "(Replicate(), Shard(dim=0))")])
def test_tensor_rule_refuses_unsupported_placements(
    results: list[dict[str, Any]], case: str, placement: str
) -> None:
    message = results[0][case]
    assert placement in message and "(4, 6)" in message and "Shard(0)" in message, message
