"""Wire formats of sparse gradient messages: how indices and values become bytes.

A sparse message is the set of entries ``(i, x_i)`` one rank sends for one
bucket of ``n`` gradient entries. It is encoded as one ``uint8`` tensor, in
one of two forms:

* **counted** (top-k, DGC: every rank sends ``k`` entries and every rank
  knows ``k``)::

      [indices, padded to their worst-case length] [values]

  a fixed length, so the messages travel in one all-gather;
* **headed** (threshold: the count varies by rank and step)::

      [count k: uint32] [index parameter: uint8] [indices] [values]

  exchanged after an all-gather of the lengths (4 bytes a rank).

Each section is padded to whole bytes. The cost per entry is what limits
the compression ratio: with int64 indices and fp32 values an entry costs
12 bytes, so a density of 1% saves only 4 / (0.01 · 12) = 33× over sending
all ``n`` fp32 entries.

Index codings (``index_coding=``):

* ``"int64"``, ``"int32"``: the indices as they are (8 or 4 bytes each).
* ``"bits"``: each index in ``w = ceil(log2 n)`` bits, packed (11 bits for
  ``n = 1,898``; 15 bits for ``n = 32,000``).
* ``"rice"`` (default): the sorted indices as gaps ``d_j = i_j − i_{j−1} − 1``
  in a Golomb–Rice code (Rice 1979): the low ``b`` bits of each gap in
  binary, the rest ``d_j >> b`` in unary. ``b`` is chosen per message to make
  the message shortest (exactly, by trying every ``b``) and sent in the
  header. At density ``p`` a gap is about geometric, and the code costs about
  ``log2(1/p) + 1.5`` bits per entry (measured on random sets: 4.75 bits at
  10%, 8.1 at 1%, 11.5 at 0.1%), within 1.5% of the entropy ``H(p)/p`` of a
  random ``p``-sparse set.

Value codings (``value_coding=``): ``"fp32"`` (4 bytes), ``"fp16"`` (2 bytes;
values are clamped to fp16's range first), ``"bf16"`` (2 bytes), ``"fp8"``
(1 byte: float8 e4m3 after dividing by one fp32 scale per message,
``max |x| / 448``, so the largest value lands on e4m3's largest; 3 mantissa
bits, relative rounding error ≤ 6.25%; values below ``max |x| · 2⁻¹⁸`` become
0), ``"sign"`` (1 bit, packed; the receiver supplies the magnitude). Every hook keeps what
the coding lost (clamping, rounding) in its residual, so coding errors are
fed back like the entries not sent.

:func:`encode` and :func:`decode` are exact inverses for the indices and for
:func:`code_values`' output, and every rank decodes every message the same
way, so all ranks compute bit-identical averages.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "INDEX_CODINGS",
    "VALUE_CODINGS",
    "HEADER_BYTES",
    "check_coding",
    "code_values",
    "decode",
    "encode",
    "counted_message_bytes",
    "counted_rice_parameter",
    "pack_bits",
    "unpack_bits",
]

INDEX_CODINGS: tuple[str, ...] = ("rice", "bits", "int32", "int64")
VALUE_CODINGS: tuple[str, ...] = ("fp16", "bf16", "fp32", "fp8", "sign")

#: count (uint32) + index parameter (uint8)
HEADER_BYTES = 5

_FP16_MAX = float(torch.finfo(torch.float16).max)
_FP8 = torch.float8_e4m3fn
_FP8_MAX = float(torch.finfo(_FP8).max)
_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def check_coding(index_coding: str, value_coding: str) -> None:
    """Raise ``ValueError`` naming the value unless both codings are known."""
    if index_coding not in INDEX_CODINGS:
        raise ValueError(f"index_coding must be one of {list(INDEX_CODINGS)}, got {index_coding!r}")
    if value_coding not in VALUE_CODINGS:
        raise ValueError(f"value_coding must be one of {list(VALUE_CODINGS)}, got {value_coding!r}")


def pack_bits(bits: Tensor) -> Tensor:
    """Pack a 0/1 tensor (any integer or bool dtype) into bytes, most significant bit first."""
    bits = bits.to(torch.uint8).reshape(-1)
    pad = (-len(bits)) % 8
    if pad:
        bits = torch.cat([bits, bits.new_zeros(pad)])
    weights = _WEIGHTS.to(bits.device)
    return (bits.view(-1, 8) * weights).sum(1, dtype=torch.int32).to(torch.uint8)


def unpack_bits(data: Tensor, count: int) -> Tensor:
    """The first ``count`` bits of ``data`` (uint8) as a uint8 0/1 tensor."""
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=data.device)
    return ((data[:, None] >> shifts) & 1).reshape(-1)[:count]


def _index_width(n: int) -> int:
    return max(1, math.ceil(math.log2(max(n, 2))))


def _to_bits(values: Tensor, width: int) -> Tensor:
    shifts = torch.arange(width - 1, -1, -1, dtype=torch.int64, device=values.device)
    return ((values[:, None] >> shifts) & 1).reshape(-1)


def _from_bits(bits: Tensor, width: int) -> Tensor:
    shifts = torch.arange(width - 1, -1, -1, dtype=torch.int64, device=bits.device)
    return (bits.view(-1, width).to(torch.int64) << shifts).sum(1)


def _rice_parameter(gaps: Tensor, limit: int) -> int:
    """The Rice parameter ``b`` in ``0..limit`` that makes the code of ``gaps`` shortest."""
    if len(gaps) == 0:
        return 0
    candidates = torch.arange(limit + 1, dtype=torch.int64, device=gaps.device)
    lengths = len(gaps) * (candidates + 1) + (gaps[None, :] >> candidates[:, None]).sum(1)
    return int(lengths.argmin())


def counted_rice_parameter(n: int, k: int) -> int:
    """The Rice parameter of counted messages: it minimises the worst-case length
    ``k (b + 1) + (n − k) / 2^b`` bits, i.e. ``2^b ≈ (n − k) ln 2 / k``."""
    if k <= 0 or n <= k:
        return 0
    return min(range(_index_width(n) + 1), key=lambda b: k * (b + 1) + ((n - k) >> b))


def _rice_bytes_bound(n: int, k: int, b: int) -> int:
    """Most bytes ``k`` sorted indices below ``n`` take in a Rice code of parameter ``b``:
    ``k`` stop bits, ``k·b`` low bits, and the gaps' high parts, which sum to at most
    ``(n − k) >> b`` because the gaps sum to at most ``n − k``."""
    return (k * b + 7) // 8 + (k + ((n - k) >> b) + 7) // 8


def _encode_indices(indices: Tensor, n: int, coding: str, b: int | None = None
                    ) -> tuple[int, Tensor]:
    if coding == "int64":
        return 0, indices.to(torch.int64).view(torch.uint8)
    if coding == "int32":
        return 0, indices.to(torch.int32).view(torch.uint8)
    width = _index_width(n)
    if coding == "bits":
        return 0, pack_bits(_to_bits(indices, width))
    gaps = torch.diff(indices, prepend=indices.new_full((1,), -1)) - 1
    if b is None:
        b = _rice_parameter(gaps, width)
    low = pack_bits(_to_bits(gaps & ((1 << b) - 1), b))
    high = gaps >> b
    stops = torch.cumsum(high + 1, 0) - 1  # position of each unary code's terminating 0
    unary = torch.ones(int(stops[-1]) + 1 if len(stops) else 0, dtype=torch.uint8,
                       device=indices.device)
    unary[stops] = 0
    return b, torch.cat([low, pack_bits(unary)])


def _decode_indices(data: Tensor, k: int, n: int, coding: str, b: int) -> Tensor:
    if coding == "int64":
        return data.clone().view(torch.int64)
    if coding == "int32":
        return data.clone().view(torch.int32).to(torch.int64)
    width = _index_width(n)
    if coding == "bits":
        return _from_bits(unpack_bits(data, k * width), width)
    low_bytes = (k * b + 7) // 8
    low = _from_bits(unpack_bits(data[:low_bytes], k * b), b) if b else 0
    unary = unpack_bits(data[low_bytes:], 8 * (len(data) - low_bytes))
    stops = torch.nonzero(unary == 0).reshape(-1)[:k]
    high = torch.diff(stops, prepend=stops.new_full((1,), -1)) - 1
    return torch.cumsum((high << b) + low + 1, 0) - 1


def code_values(values: Tensor, coding: str) -> Tensor:
    """``values`` as the receiver will decode them (fp32), for the sender's error feedback.

    For ``"sign"`` this is ``±1`` (zero counts as ``+1``); the hook supplies the magnitude.
    """
    if coding == "fp32":
        return values.to(torch.float32)
    if coding == "fp16":
        return values.clamp(-_FP16_MAX, _FP16_MAX).to(torch.float16).to(torch.float32)
    if coding == "bf16":
        return values.to(torch.bfloat16).to(torch.float32)
    if coding == "fp8":
        scale, codes = _fp8(values)
        return codes.view(_FP8).to(torch.float32) * scale
    return torch.where(values < 0, -1.0, 1.0).to(torch.float32)


def _fp8(values: Tensor) -> tuple[Tensor, Tensor]:
    """(scale as a 1-element fp32 tensor, e4m3 codes as uint8) of ``values``."""
    top = values.abs().max().float() if len(values) else values.new_zeros((), dtype=torch.float32)
    scale = torch.where(top > 0, top / _FP8_MAX, torch.ones_like(top)).reshape(1)
    scaled = (values.to(torch.float32) / scale).clamp(-_FP8_MAX, _FP8_MAX)
    return scale, scaled.to(_FP8).view(torch.uint8)


def _encode_values(values: Tensor, coding: str) -> Tensor:
    if coding == "fp32":
        return values.to(torch.float32).contiguous().view(torch.uint8)
    if coding == "fp16":
        return values.clamp(-_FP16_MAX, _FP16_MAX).to(torch.float16).view(torch.uint8)
    if coding == "bf16":
        return values.to(torch.bfloat16).view(torch.uint8)
    if coding == "fp8":
        scale, codes = _fp8(values)
        return torch.cat([scale.view(torch.uint8), codes])
    return pack_bits(values < 0)


def _value_bytes(k: int, coding: str) -> int:
    return {"fp32": 4 * k, "fp16": 2 * k, "bf16": 2 * k, "fp8": 4 + k}.get(coding, (k + 7) // 8)


def _decode_values(data: Tensor, k: int, coding: str) -> Tensor:
    if coding == "sign":
        return 1.0 - 2.0 * unpack_bits(data, k).to(torch.float32)
    if coding == "fp8":
        scale = data[:4].clone().view(torch.float32)
        return data[4:].clone().view(_FP8).to(torch.float32) * scale
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[coding]
    return data.clone().view(dtype).to(torch.float32)


def encode(indices: Tensor, values: Tensor, n: int, index_coding: str, value_coding: str,
           counted: bool = False) -> Tensor:
    """Encode ``k`` entries of an ``n``-vector as one uint8 message.

    ``indices`` must be sorted ascending and unique (int64); ``values`` are
    the entries' values (coded with ``value_coding``; for ``"sign"`` only
    their signs are kept).

    ``counted=True`` is for exchanges where every rank sends exactly ``k``
    entries and the receiver knows ``k``: the message has no header and a
    fixed length, :func:`counted_message_bytes` (Rice indices use the fixed
    parameter :func:`counted_rice_parameter` and are padded to their
    worst-case length, which is only a few bits above the typical one because
    the gaps of ``k`` indices below ``n`` sum to at most ``n − k``), so one
    all-gather needs no length exchange.
    """
    k = len(indices)
    if counted:
        b = counted_rice_parameter(n, k) if index_coding == "rice" else None
        _, index_bytes = _encode_indices(indices, n, index_coding, b)
        if index_coding == "rice":
            assert b is not None
            pad = _rice_bytes_bound(n, k, b) - len(index_bytes)
            index_bytes = torch.cat([index_bytes, index_bytes.new_zeros(pad)])
        return torch.cat([index_bytes.cpu(), _encode_values(values, value_coding).cpu()]).to(
            indices.device)
    b, index_bytes = _encode_indices(indices, n, index_coding)
    header = torch.tensor([k], dtype=torch.int32).view(torch.uint8)
    parts = [header, torch.tensor([b], dtype=torch.uint8), index_bytes.cpu()]
    parts.append(_encode_values(values, value_coding).cpu())
    return torch.cat(parts).to(indices.device)


def decode(message: Tensor, n: int, index_coding: str, value_coding: str,
           count: int | None = None) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`encode`: ``(indices int64, values float32)``.

    ``message`` must be exactly what :func:`encode` returned (no padding after
    it); ``count`` is ``k`` for a counted message (``None``: read the header).
    """
    if count is not None:
        k, start = count, 0
        b = counted_rice_parameter(n, k) if index_coding == "rice" else 0
    else:
        k, start = int(message[:4].clone().view(torch.int32)[0]), HEADER_BYTES
        b = int(message[4])
    end = len(message) - _value_bytes(k, value_coding)
    indices = _decode_indices(message[start:end], k, n, index_coding, b)
    return indices, _decode_values(message[end:], k, value_coding)


def counted_message_bytes(k: int, n: int, index_coding: str, value_coding: str) -> int:
    """The length of every counted message (``encode(..., counted=True)``) of ``k`` entries."""
    index_bytes = {"int64": 8 * k, "int32": 4 * k}.get(index_coding)
    if index_bytes is None and index_coding == "bits":
        index_bytes = (k * _index_width(n) + 7) // 8
    elif index_bytes is None:
        index_bytes = _rice_bytes_bound(n, k, counted_rice_parameter(n, k))
    return index_bytes + _value_bytes(k, value_coding)
