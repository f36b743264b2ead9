"""The local multi-process launcher: results, a failing rank, the deadline."""

from __future__ import annotations

import time

import pytest

from descentlab.distributed import RankError, run_ranks
from tests.distributed.workers import fail_on_rank_one, sleep_forever, sum_of_ranks


def test_every_rank_joins_one_gloo_group() -> None:
    results = run_ranks(sum_of_ranks, 3, 0.5, timeout=120, start_method="fork")
    assert results == [(0, 1.5, "gloo"), (1, 1.5, "gloo"), (2, 1.5, "gloo")]


def test_a_failing_rank_is_reported_with_its_traceback() -> None:
    with pytest.raises(RankError, match="rank 1 of 2 failed") as info:
        run_ranks(fail_on_rank_one, 2, timeout=120, start_method="fork")
    assert "ArithmeticError: rank one fails on purpose" in str(info.value)


def test_ranks_past_the_deadline_are_killed() -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish within 4 s"):
        run_ranks(sleep_forever, 2, timeout=4, start_method="fork")
    assert time.monotonic() - start < 60


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"world_size": 0}, "world_size must be an int >= 1, got 0"),
    ({"world_size": 2, "timeout": 0}, "timeout must be > 0 seconds, got 0"),
    ({"world_size": 2, "start_method": "thread"}, "start_method must be"),
])
def test_bad_arguments(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        run_ranks(sum_of_ranks, **kwargs)
