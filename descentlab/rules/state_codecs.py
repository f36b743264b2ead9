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
lower code), one byte; the nearest code is looked up by the top 17 bits of
the value's float32 pattern and one comparison, not searched, so encoding
and decoding are a few vectorised passes each. Decoding
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


#: Rounding looks the code up by the top 17 bits of the value's float32 pattern (sign, exponent,
#: 8 mantissa bits): each of those intervals (2⁻⁸ relative width) holds at most one decision
#: boundary, since neighbouring boundaries of the maps lie at least 0.5% apart.
_PREFIX_SHIFT = 15
_PREFIXES = 1 << (32 - _PREFIX_SHIFT)
_NEGATIVE = _PREFIXES >> 1  # the sign bit's place in a prefix
_ONE = 0x3F800000 >> _PREFIX_SHIFT  # the prefix of 1.0


@functools.cache
def _rounding_tables(signed: bool, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per 17-bit prefix: the code of the smallest float32 with that prefix (uint8), and the
    first boundary at or above it (+inf past the last, and for magnitudes beyond 1 and NaN)."""
    prefix = torch.arange(_PREFIXES, dtype=torch.int64)
    magnitude = prefix % _NEGATIVE
    negative = prefix >= _NEGATIVE
    # the smallest value of a prefix: the lowest magnitude when positive, the highest when not
    low_bits = (magnitude << _PREFIX_SHIFT) | torch.where(negative, (1 << _PREFIX_SHIFT) - 1, 0)
    smallest = low_bits.clamp_(max=0x3F800000).to(torch.int32).view(torch.float32)
    smallest = torch.where(negative, -smallest, smallest)
    thresholds = _thresholds(signed, torch.device("cpu"))
    codes = torch.bucketize(smallest, thresholds)
    above = torch.cat([thresholds, torch.tensor([float("inf")])])[codes]
    beyond = magnitude > _ONE  # |u| > 1, ±inf, NaN: the code of ±1 (normalised values never are)
    codes = torch.where(beyond, torch.where(negative, 0, 255), codes)
    above = torch.where(beyond, float("inf"), above)
    return codes.to(torch.uint8).to(device), above.to(device)


def _round_to_codes(u: Tensor, signed: bool, out: Tensor | None = None) -> Tensor:
    """The index of the nearest code (ties to the lower) of each value of the 1-D ``u`` ∈ [−1, 1].

    Five passes: the prefix (a shift and a mask of the bit pattern), two table
    lookups, one comparison, one addition (into ``out``, uint8, when given).
    """
    index = (u.view(torch.int32) >> _PREFIX_SHIFT).bitwise_and_(_PREFIXES - 1)
    lower, above = _rounding_tables(signed, u.device)
    return torch.add(lower.index_select(0, index), u > above.index_select(0, index), out=out)


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


def _blocks(flat: Tensor) -> tuple[Tensor, Tensor]:
    """The full blocks of the 1-D ``flat`` as a ``[k, BLOCK]`` view, and the partial tail."""
    full = flat.numel() // BLOCK * BLOCK
    return flat[:full].view(-1, BLOCK), flat[full:]


def quantise_blockwise(
    x: Tensor, signed: bool, out: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """Codes (uint8, ``x``'s shape) and per-block absmax (float32) of ``x`` (module docstring).

    Blocks run over ``x`` flattened; the last holds ``x.numel() % BLOCK``
    values when that is not zero, and its absmax is taken over those alone.
    A block of zeros has absmax 0 and decodes to zeros. With ``out`` (codes,
    absmax: contiguous, of those shapes and dtypes) the result is written there.
    The passes over the values: |x|, the block maxima, the division by
    them, and the rounding's five.
    """
    flat = x.detach().reshape(-1).to(torch.float32)
    n = flat.numel()
    codes, absmax = out if out is not None else (
        torch.empty(x.shape, dtype=torch.uint8, device=x.device),
        torch.empty(block_count(n), dtype=torch.float32, device=x.device))
    main, tail = _blocks(flat)
    normalised = flat.abs()  # |x| first, then x divided by its block's absmax, in one buffer
    norm_main, norm_tail = _blocks(normalised)
    torch.amax(norm_main, dim=1, out=absmax[: main.shape[0]])
    if tail.numel():
        torch.amax(norm_tail, dim=0, out=absmax[main.shape[0]])
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    torch.div(main, scale[: main.shape[0]].unsqueeze(1), out=norm_main)
    if tail.numel():
        torch.div(tail, scale[-1], out=norm_tail)
    _round_to_codes(normalised, signed, out=codes.view(-1))
    return codes, absmax


def dequantise_blockwise(
    codes: Tensor, absmax: Tensor, signed: bool, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The values ``codes`` and ``absmax`` stand for, in ``dtype``, shaped like ``codes``.

    Three passes: the codes widened to indices, one table lookup, one product.
    """
    values = _codes_on(signed, codes.device, dtype).index_select(0, codes.reshape(-1).int())
    main, tail = _blocks(values)
    scale = absmax.to(dtype)
    main.mul_(scale[: main.shape[0]].unsqueeze(1))
    if tail.numel():
        tail.mul_(scale[-1])
    return values.view(codes.shape)


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
    nan = x32.isnan()
    if nan.any():  # the noise may carry a NaN's payload into its sign: keep NaN a NaN
        out = torch.where(nan, x32.to(torch.bfloat16), out)
    return out
