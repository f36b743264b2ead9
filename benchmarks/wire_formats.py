"""Bytes per sparse entry of every index and value coding, and the ratio they allow.

For a bucket of ``n`` fp32 gradient entries (the digits CNN's 1,898, the
character transformer's 32,812, and 10^6) and densities 10%, 1% and 0.1%,
a random index set is encoded with each index coding and each value coding,
both as a *counted* message (top-k, DGC: fixed length, no header) and as a
*headed* one (threshold: a 5-byte header, plus the 4-byte length each rank
all-gathers first). Reported: bytes per entry (everything sent divided by
the entries), and the ratio to sending all ``n`` entries in fp32
(``4 n`` bytes). Random sets are the hardest case for delta coding: the
indices real top-k picks cluster by layer, and cost a little less.

    python benchmarks/wire_formats.py   # table; writes benchmarks/results/wire_formats.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from descentlab.distributed import coding

SIZES = {"digits_cnn": 1898, "stdlib_char_transformer": 32812, "1M": 1_000_000}
DENSITIES = (0.1, 0.01, 0.001)
PAIRS = [("int64", "fp32"), ("int32", "fp32"), ("int32", "fp16"), ("bits", "fp16"),
         ("rice", "fp16"), ("rice", "fp8"), ("rice", "sign")]


def main() -> int:
    """Measure every (size, density, coding) and print the table."""
    rows = []
    for label, n in SIZES.items():
        for density in DENSITIES:
            k = max(1, math.ceil(density * n))
            gen = torch.Generator().manual_seed(0)
            indices = torch.randperm(n, generator=gen)[:k].sort().values
            values = torch.randn(k, generator=gen)
            for index_coding, value_coding in PAIRS:
                counted = len(coding.encode(indices, values, n, index_coding, value_coding,
                                            counted=True))
                headed = 4 + len(coding.encode(indices, values, n, index_coding, value_coding))
                rows.append({"bucket": label, "n": n, "density": density, "k": k,
                             "index": index_coding, "value": value_coding,
                             "counted_bytes": counted, "headed_bytes": headed,
                             "counted_per_entry": counted / k, "headed_per_entry": headed / k,
                             "counted_ratio": 4 * n / counted, "headed_ratio": 4 * n / headed})
    path = Path("benchmarks/results/wire_formats.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))
    print("| bucket | density | index + value | counted B/entry | × vs fp32 | "
          "headed B/entry | × vs fp32 |\n|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['bucket']} | {100 * r['density']:g}% | {r['index']} + {r['value']} | "
              f"{r['counted_per_entry']:.2f} | {r['counted_ratio']:.0f} | "
              f"{r['headed_per_entry']:.2f} | {r['headed_ratio']:.0f} |")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
