"""One rank of a two-process DDP run (gloo on 127.0.0.1), started by test_aliasing.

Usage: ``python -m tests.engine.ddp_ranks RANK WORLD INIT_FILE OUT_FILE``. The
rank trains the same model under DDP, in both bucket modes and with both ways
of zeroing gradients, with torch.optim.SGD and with descentlab's SGD on every
engine, and saves for each run the parameters and whether every step left
``.grad`` where DDP put it (in ``gradient_as_bucket_view`` mode, views of
DDP's own buckets).
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import descentlab
from tests.engine.helpers import RICH

#: "compiled" differs from "flat" only in its arithmetic (the layout and gradient handling
#: are the same code), and compiling in both ranks would cost seconds each.
ENGINES = ["reference", "flat", "auto"]


def train(engine: str | None, bucket_view: bool, set_to_none: bool, rank: int, steps: int = 6):
    """Parameters after ``steps`` DDP steps, and whether every step left ``.grad`` in place."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    ddp = DistributedDataParallel(model, gradient_as_bucket_view=bucket_view, bucket_cap_mb=1e-4)
    params = list(model.parameters())
    if engine is None:
        opt = torch.optim.SGD(params, **RICH["sgd"])
    else:
        opt = descentlab.SGD(params, engine=engine, **RICH["sgd"])
    kept = True
    for t in range(steps):
        opt.zero_grad(set_to_none=set_to_none)
        gen = torch.Generator().manual_seed(100 * t + rank)
        ddp(torch.randn(8, 6, generator=gen, dtype=torch.float64)).pow(2).mean().backward()
        before = [p.grad.data_ptr() for p in params]
        opt.step()
        kept = kept and before == [p.grad.data_ptr() for p in params]
    return torch.cat([p.detach().flatten() for p in params]), kept


def main(rank: int, world: int, init_file: str, out_file: str) -> None:
    """Run every (bucket mode, zeroing, optimizer) combination and save the results."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {}
        for bucket_view in (False, True):
            for set_to_none in (True, False):
                for engine in [None, *ENGINES]:
                    key = (bucket_view, set_to_none, engine)
                    results[key] = train(engine, bucket_view, set_to_none, rank)
        torch.save(results, out_file)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
