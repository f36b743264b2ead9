"""Every hook under real DDP (2 ranks, gloo on loopback) against its single-process reference.

All scenarios run in one 2-rank launch (the launch, not the training, is the
cost); each test below checks one of them.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from descentlab.distributed import run_ranks
from tests.distributed.scenarios import reference_run, run_all

WORLD = 2
DGC_SPARSE = {"density": 0.004, "warmup_steps": 4, "clip_norm": 0.5, "value_coding": "fp32"}

SCENARIOS: dict[str, dict[str, Any]] = {
    "dense": {"kind": "dense", "momentum": 0.9},
    "threshold_fixed_sign": {"kind": "threshold", "state": {"threshold": 0.02}, "momentum": 0.9,
                             "raw_register": True},
    "threshold_density_sign": {"kind": "threshold", "state": {"density": 0.05}, "momentum": 0.9},
    "threshold_density_value": {"kind": "threshold", "momentum": 0.9, "state": {
        "density": 0.05, "message": "value", "value_coding": "fp32"}},
    "threshold_value_fp16_bits": {"kind": "threshold", "state": {
        "density": 0.1, "message": "value", "index_coding": "bits"}},
    "topk": {"kind": "topk", "state": {"density": 0.05, "value_coding": "fp32"},
             "momentum": 0.9},
    "topk_fp16_int32_bucket_view": {"kind": "topk", "bucket_view": True, "momentum": 0.9,
                                    "state": {"density": 0.1, "index_coding": "int32"}},
    "topk_no_sync": {"kind": "topk", "accumulate": 2, "state": {"density": 0.05}},
    "topk_fp8": {"kind": "topk", "momentum": 0.9, "state": {"density": 0.1, "value_coding": "fp8"}},
    "topk_descentlab_sgd": {"kind": "topk", "optimizer": "descentlab", "bucket_view": True,
                            "momentum": 0.9, "state": {"density": 0.05}},
    "dgc": {"kind": "dgc", "steps": 8, "state": DGC_SPARSE,
            "densities": [0.25, 0.0625, 0.015625, 0.004, 0.004]},
    "dgc_no_sync_bucket_view": {"kind": "dgc", "steps": 8, "state": DGC_SPARSE, "accumulate": 2,
                                "bucket_view": True,
                                "densities": [0.25, 0.0625, 0.015625, 0.004, 0.004]},
    "dgc_full_density": {"kind": "dgc", "densities": [1.0], "state": {
        "density": 1.0, "momentum": 0.9, "momentum_masking": False, "value_coding": "fp32"}},
    "sign": {"kind": "sign", "lr": 0.05, "momentum": 0.9},
    "sign_buckets": {"kind": "sign", "lr": 0.05, "bucket_cap_mb": 0.0005, "accumulate": 2},
    "threshold_fixed_buckets_view": {"kind": "threshold", "state": {"threshold": 0.02},
                                     "bucket_cap_mb": 0.0005, "bucket_view": True},
}
RESUMED = {
    "topk": 3,
    "dgc": 5,
    "threshold_density_sign": 3,
    "threshold_fixed_buckets_view": 2,
    "sign_buckets": 4,
}
SPECS = {**SCENARIOS, **{f"{name}/resumed": {**SCENARIOS[name], "resume_at": cut}
                         for name, cut in RESUMED.items()}}


@pytest.fixture(scope="module")
def launch() -> list[dict[str, Any]]:
    """One 2-rank DDP launch: every scenario, then the bad-input checks."""
    return run_ranks(run_all, WORLD, list(SPECS.values()), timeout=240, start_method="fork",
                     preload=("torch._dynamo",))


@pytest.fixture(scope="module")
def runs(launch: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Every scenario's per-rank results, by name."""
    return {name: [rank["scenarios"][i] for rank in launch] for i, name in enumerate(SPECS)}


FOUR_RANKS = ["threshold_density_value", "topk", "dgc", "sign"]


@pytest.fixture(scope="module")
def runs4() -> dict[str, list[dict[str, Any]]]:
    """A few scenarios again with 4 ranks."""
    from tests.distributed.scenarios import run_in_rank

    results = run_ranks(run_in_rank, 4, [SCENARIOS[n] for n in FOUR_RANKS], timeout=240,
                        start_method="fork", preload=("torch._dynamo",))
    return {name: [rank[i] for rank in results] for i, name in enumerate(FOUR_RANKS)}


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_matches_reference_and_ranks_agree(runs: dict[str, Any], name: str) -> None:
    spec = SCENARIOS[name]
    ranks = runs[name]
    assert all(r["ranks_equal"] for r in ranks), "ranks ended with different parameters"
    expected = reference_run(spec, WORLD)
    assert _max_rel(ranks[0]["params"], expected) < 1e-10
    if spec["kind"] != "dense":
        assert ranks[0]["step"] == spec.get("steps", 6)


@pytest.mark.parametrize("name", FOUR_RANKS)
def test_four_ranks_match_reference(runs4: dict[str, Any], name: str) -> None:
    ranks = runs4[name]
    assert all(r["ranks_equal"] for r in ranks)
    assert _max_rel(ranks[0]["params"], reference_run(SCENARIOS[name], 4)) < 1e-10


def test_parameters_moved(runs: dict[str, Any]) -> None:
    """The references are not trivially satisfied: every scheme changes the model."""
    from tests.distributed.scenarios import make_model

    start = torch.cat([p.detach().reshape(-1) for p in make_model().parameters()])
    for name in SCENARIOS:
        assert _max_rel(runs[name][0]["params"], start) > 1e-4, name


def test_dgc_momentum_correction_is_momentum_sgd_at_full_density(runs: dict[str, Any]) -> None:
    """Hook momentum + optimizer without momentum == momentum SGD on the averaged gradient."""
    expected = reference_run({"kind": "dense", "momentum": 0.9}, WORLD)
    assert _max_rel(runs["dgc_full_density"][0]["params"], expected) < 1e-6


@pytest.mark.parametrize("name", list(RESUMED))
def test_resumed_run_continues_identically(runs: dict[str, Any], name: str) -> None:
    for straight, resumed in zip(runs[name], runs[f"{name}/resumed"], strict=True):
        assert torch.equal(straight["params"], resumed["params"])
        assert straight["step"] == resumed["step"]


def test_traffic_counts_sparse_messages(runs: dict[str, Any]) -> None:
    """Bytes per step, as documented: counted top-k and sign messages, headed threshold ones."""
    from descentlab.distributed import coding

    n, tensors, steps = 212, 4, 6
    topk = runs["topk_fp16_int32_bucket_view"][0]["traffic"]
    k = 22  # ceil(0.1 * 212); counted: int32 indices + fp16 values, one all-gather
    assert topk["sent"] == steps * (4 * k + 2 * k)
    assert topk["received"] == steps * (WORLD - 1) * (4 * k + 2 * k)
    assert topk["collectives"] == steps
    rice = runs["topk"][0]["traffic"]
    k = 11  # ceil(0.05 * 212), fp32 values
    assert rice["sent"] == steps * coding.counted_message_bytes(k, n, "rice", "fp32")
    assert rice["sent"] < steps * (k + 4 * k)  # under 8 bits an index
    sign = runs["sign"][0]["traffic"]
    assert sign["sent"] == steps * (4 * tensors + (n + 7) // 8)
    threshold = runs["threshold_fixed_sign"][0]["traffic"]  # lengths first, then messages
    assert threshold["collectives"] == 2 * steps
    assert threshold["received"] >= threshold["sent"]  # padded to the longer message


@pytest.mark.parametrize(("case", "expected"), [
    ("non_ddp", "TypeError: register_comm_hook needs a torch.nn.parallel.DistributedDataParallel "
                "model, got Sequential"),
    ("hook_without_bucket", "TypeError: threshold_hook is a DistributedDataParallel "
                            "communication hook"),
    ("wrong_state", "TypeError: topk_hook needs a TopKState, got SignState"),
    ("world_size", "ValueError: TopKState: the hook state was saved by a run with world_size=4, "
                   "but this process group has world_size=2"),
    ("rank", "ValueError: TopKState: the hook state was saved by rank 1 and is being loaded "
             "by rank 0"),
    ("kind", "ValueError: TopKState.load_state_dict: the state was saved by 'SignState'"),
    ("shapes", "ValueError: TopKState: the loaded hook state holds 2 buffers whose shapes do "
               "not match this model's 4 parameters"),
])
def test_bad_input_in_a_process_group(launch: list[dict[str, Any]], case: str,
                                      expected: str) -> None:
    assert launch[0]["errors"][case].startswith(expected)
