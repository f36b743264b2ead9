"""Compact storage for optimizer state: bfloat16 with stochastic rounding, and 8-bit blocks.

Two codecs, each a pair *encode* (a float tensor → its compact form) and
*decode* (compact form → a float tensor); :mod:`descentlab.rules.low_precision`
applies them around an elementwise rule.

**bfloat16 with stochastic rounding.** bfloat16 keeps the top 16 bits of a
float32 (sign, 8 exponent bits, 7 mantissa bits). Rounding x to nearest
would lose every update smaller than half a unit in the last place (a moment
decaying by β = 0.999 would never change); rounding *stochastically* rounds
up with probability equal to the fraction cut off, so the stored value is
unbiased, E[round(x)] = x. With b the float32 bit pattern of x and r uniform
on {0, …, 2¹⁶ − 1}, the result is the bfloat16 whose pattern is the top 16
bits of b + r (:func:`stochastic_round_bf16`; sign–magnitude patterns make
this symmetric for negative x; ±inf stay, NaN stays NaN). The random bits
come from a generator seeded per call (:func:`step_generator`), so a run
with the same seeds repeats bit for bit.

**8-bit blockwise quantisation** (Dettmers, Lewis, Shleifer & Zettlemoyer,
"8-bit Optimizers via Block-wise Quantization", ICLR 2022). The flattened
tensor is cut into blocks of :data:`BLOCK` = 256 elements (the last block
may be shorter); each block is divided by its absolute maximum (its
*absmax*, kept in float32), so it lies in [−1, 1], and each value is
replaced by the index of the nearest of 256 code values (ties go to the
lower code), one byte; the nearest code is looked up by the top bits of the
value's float32 pattern and one comparison, not searched. Decoding
multiplies the code value by the block's absmax. The code values are the
paper's *dynamic* map (:func:`dynamic_map`), dense near zero and coarse
near one, so small and large values in a block both keep about two
significant digits:

* signed (first moments, momentum): a sign bit, then e zero bits (0 ≤ e ≤ 6)
  and an indicator bit, then 6 − e fraction bits. The value is
  ±10⁻ᵉ · (0.1 + (j + ½)·0.9/2^(6−e)): the midpoints of 2^(6−e) equal bins
  of [0.1, 1], scaled by 10⁻ᵉ. That is 127 magnitudes per sign, plus 0 and 1;
* unsigned (second moments, which are ≥ 0): the sign bit is one more
  fraction bit, 2^(7−e) bins per exponent, 254 values, plus 0 and 1.

The error of one round trip is at most half the gap between neighbouring
codes, times the block's absmax (:func:`code_gaps` gives the gaps).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = [
    "BLOCK",
    "dynamic_map",
    "code_gaps",
    "quantise_blockwise",
    "dequantise_blockwise",
    "block_count",
    "stochastic_round_bf16",
    "step_generator",
]

#: Elements per block of the 8-bit state (one float32 absmax each).
BLOCK = 256
#: Exponent range of the dynamic map: magnitudes 10⁰ … 10⁻⁶.
_EXPONENTS = 7
_MASK = -(1 << 16)  # 0xFFFF0000 as int32: keeps the bfloat16 half of a float32
_MASK64 = (1 << 64) - 1


@functools.cache
def dynamic_map(signed: bool) -> Tensor:
    """The 256 code values of the dynamic map, ascending, float32 (see the module docstring)."""
    values = [0.0, 1.0]
    extra_bit = 0 if signed else 1
    for e in range(_EXPONENTS):
        bins = 2 ** (_EXPONENTS - 1 - e + extra_bit)
        width = 0.9 / bins
        for j in range(bins):
            magnitude = 10.0**-e * (0.1 + (j + 0.5) * width)
            values.append(magnitude)
            if signed:
                values.append(-magnitude)
    values.sort()
    assert len(values) == 256
    return torch.tensor(values, dtype=torch.float32)


@functools.cache
def _thresholds(signed: bool, device: torch.device) -> Tensor:
    """Midpoints between neighbouring code values: the decision boundaries of rounding."""
    codes = dynamic_map(signed).to(device)
    return (codes[1:] + codes[:-1]) / 2


#: Rounding looks the code up by the top 17 bits of the value's float32 pattern: each of those
#: intervals (2⁻⁸ relative width) holds at most one decision boundary, since neighbouring
#: boundaries of the maps lie at least 0.5% apart.
_PREFIX_SHIFT = 15
_ONE = 0x3F800000 >> _PREFIX_SHIFT  # the prefix of 1.0


@functools.cache
def _rounding_tables(signed: bool, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per prefix of an order-preserving integer key of [−1, 1]: the code at the interval's
    lower end (uint8), and the boundary above it (+inf past the last)."""
    keys = (torch.arange(-_ONE, _ONE + 1, dtype=torch.int64) << _PREFIX_SHIFT).to(torch.int32)
    lower = torch.where(keys >= 0, keys, (-keys) | torch.tensor(-(1 << 31), dtype=torch.int32))
    lower = lower.view(torch.float32)
    thresholds = _thresholds(signed, torch.device("cpu"))
    codes = torch.bucketize(lower, thresholds)
    above = torch.cat([thresholds, torch.tensor([float("inf")])])[codes]
    return codes.to(torch.uint8).to(device), above.to(device)


def _round_to_codes(u: Tensor, signed: bool) -> Tensor:
    """The index of the nearest code (ties to the lower) of each value of ``u`` ∈ [−1, 1]."""
    bits = u.view(torch.int32)
    key = torch.where(bits >= 0, bits, -(bits & 0x7FFFFFFF))
    index = (key >> _PREFIX_SHIFT).add_(_ONE).clamp_(0, 2 * _ONE).long()
    lower, above = _rounding_tables(signed, u.device)
    return lower.take(index).add_(u > above.take(index))


@functools.cache
def _codes_on(signed: bool, device: torch.device, dtype: torch.dtype) -> Tensor:
    return dynamic_map(signed).to(device=device, dtype=dtype)


def code_gaps(signed: bool) -> Tensor:
    """For each code, the larger gap to its neighbours (twice the round-trip error bound)."""
    codes = dynamic_map(signed)
    gaps = codes[1:] - codes[:-1]
    left = torch.cat([gaps[:1], gaps])
    right = torch.cat([gaps, gaps[-1:]])
    return torch.maximum(left, right)


def block_count(numel: int) -> int:
    """Blocks of :data:`BLOCK` elements needed for ``numel`` values (the last may be partial)."""
    return -(-numel // BLOCK)


def quantise_blockwise(x: Tensor, signed: bool) -> tuple[Tensor, Tensor]:
    """Codes (uint8, ``x``'s shape) and per-block absmax (float32) of ``x`` (module docstring).

    Blocks run over ``x`` flattened; the last holds ``x.numel() % BLOCK``
    values when that is not zero, and its absmax is taken over those alone.
    A block of zeros has absmax 0 and decodes to zeros.
    """
    flat = x.detach().reshape(-1).to(torch.float32)
    n = flat.numel()
    pad = block_count(n) * BLOCK - n
    blocks = torch.nn.functional.pad(flat, (0, pad)).view(-1, BLOCK)
    absmax = blocks.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    normalised = blocks / scale.unsqueeze(1)
    codes = _round_to_codes(normalised, signed)
    return codes.reshape(-1)[:n].view(x.shape), absmax


def dequantise_blockwise(
    codes: Tensor, absmax: Tensor, signed: bool, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The values ``codes`` and ``absmax`` stand for, in ``dtype``, shaped like ``codes``."""
    n = codes.numel()
    values = _codes_on(signed, codes.device, dtype).take(codes.reshape(-1).long())
    pad = absmax.numel() * BLOCK - n
    blocks = torch.nn.functional.pad(values, (0, pad)).view(-1, BLOCK)
    blocks.mul_(absmax.to(dtype).unsqueeze(1))
    return blocks.reshape(-1)[:n].view(codes.shape)


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """A generator for the random bits of one step: seeded by SplitMix64 of (seed, step).

    Distinct (seed, step) pairs give unrelated streams; the same pair always
    gives the same stream, so a resumed run draws what the uninterrupted
    run drew.
    """
    z = (seed + (step + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    generator = torch.Generator(device=device)
    generator.manual_seed(z)
    return generator


def stochastic_round_bf16(x: Tensor, generator: torch.Generator) -> Tensor:
    """``x`` (float32, or wider: rounded to float32 first) rounded stochastically to bfloat16."""
    x32 = x.to(torch.float32).contiguous()
    noise = torch.randint(
        0, 1 << 16, x32.shape, dtype=torch.int32, device=x32.device, generator=generator
    )
    rounded = noise.add_(x32.view(torch.int32)).bitwise_and_(_MASK).view(torch.float32)
    out = rounded.to(torch.bfloat16)  # exact: the low 16 bits are zero
    return torch.where(x32.isnan(), x32.to(torch.bfloat16), out)
