"""Wire formats: exact round trips, and the bytes per entry each coding costs."""

from __future__ import annotations

import math

import pytest
import torch

from descentlab.distributed import coding


def _sparse(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    indices = torch.randperm(n, generator=gen)[:k].sort().values
    return indices, torch.randn(k, generator=gen) * 10.0


@pytest.mark.parametrize("index_coding", coding.INDEX_CODINGS)
@pytest.mark.parametrize("value_coding", coding.VALUE_CODINGS)
@pytest.mark.parametrize(("n", "k"), [(1, 1), (2, 0), (300, 300), (1898, 19), (40_000, 1)])
@pytest.mark.parametrize("counted", [False, True])
def test_round_trip(index_coding: str, value_coding: str, n: int, k: int, counted: bool) -> None:
    indices, values = _sparse(n, k)
    message = coding.encode(indices, values, n, index_coding, value_coding, counted=counted)
    assert message.dtype == torch.uint8
    got_indices, got_values = coding.decode(message, n, index_coding, value_coding,
                                            k if counted else None)
    assert torch.equal(got_indices, indices)
    if value_coding == "sign":
        assert torch.equal(got_values, torch.where(values < 0, -1.0, 1.0))
    elif value_coding == "fp8" and k:  # e4m3 under one scale: within 1/16 relative
        top = values.abs().max()
        assert torch.isclose(got_values.abs().max(), top, rtol=1e-6)
        assert ((got_values - values).abs() <= values.abs() / 16 + top * 2.0 ** -18).all()
    elif value_coding != "fp8":
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        assert torch.equal(got_values, values.to(dtype[value_coding]).float())
    assert torch.equal(got_values, coding.code_values(values, value_coding))
    if counted:
        assert len(message) == coding.counted_message_bytes(k, n, index_coding, value_coding)


@pytest.mark.parametrize(("n", "k"), [(1898, 19), (1898, 10), (32_000, 320), (1000, 1)])
def test_counted_rice_holds_the_worst_case(n: int, k: int) -> None:
    """The densest and the most spread-out index sets both fit the counted length."""
    for indices in (torch.arange(k), torch.arange(n - k, n), torch.linspace(0, n - 1, k).long()):
        values = torch.ones(k)
        message = coding.encode(indices, values, n, "rice", "fp16", counted=True)
        assert len(message) == coding.counted_message_bytes(k, n, "rice", "fp16")
        assert torch.equal(coding.decode(message, n, "rice", "fp16", k)[0], indices)


def test_counted_rice_is_shorter_than_fixed_width() -> None:
    n, k = 1898, 19
    rice = coding.counted_message_bytes(k, n, "rice", "fp16")
    bits = coding.counted_message_bytes(k, n, "bits", "fp16")
    assert (rice, bits) == (21 + 38, 27 + 38)


def test_extreme_gaps_and_fp16_clamping() -> None:
    n = 1 << 20
    indices = torch.tensor([0, 1, n - 2, n - 1])
    values = torch.tensor([1e6, -1e6, 0.0, -0.0])
    message = coding.encode(indices, values, n, "rice", "fp16")
    got, vals = coding.decode(message, n, "rice", "fp16")
    assert torch.equal(got, indices)
    assert vals.tolist() == [65504.0, -65504.0, 0.0, 0.0]


@pytest.mark.parametrize(("density", "most"), [(0.1, 4.8), (0.01, 8.2), (0.001, 11.6)])
def test_rice_costs_close_to_the_entropy(density: float, most: float) -> None:
    """Bits per index of a random set of density p: Rice vs the entropy bound H(p)/p."""
    n = 200_000
    k = int(density * n)
    indices, values = _sparse(n, k, seed=1)
    bits = 8 * (len(coding.encode(indices, values, n, "rice", "sign")) - coding.HEADER_BYTES)
    bits_per_index = bits / k - 1  # minus the sign bit
    p = density
    entropy = (-p * math.log2(p) - (1 - p) * math.log2(1 - p)) / p
    assert entropy < bits_per_index < most
    assert bits_per_index < 1.02 * entropy
    fixed = 8 * (len(coding.encode(indices, values, n, "bits", "sign")) - 5) / k - 1
    assert fixed == pytest.approx(math.ceil(math.log2(n)), abs=0.01)


def test_pack_bits_is_msb_first() -> None:
    bits = torch.tensor([1, 0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.uint8)
    packed = coding.pack_bits(bits)
    assert packed.tolist() == [129, 128]
    assert torch.equal(coding.unpack_bits(packed, 9), bits)
