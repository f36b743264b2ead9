"""ZeroRedundancyOptimizer over descentlab optimizers, run in the ranks and in one process."""

from __future__ import annotations

import io
from typing import Any

import torch
from torch import nn

from descentlab.optim.registry import OPTIMIZERS

#: Every elementwise optimizer, with a setting that uses its state.
SETTINGS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    "adagrad": {"lr": 0.05},
    "rmsprop": {"lr": 0.01, "momentum": 0.5, "centered": True},
    "adadelta": {"lr": 1.0},
    "adam": {"lr": 0.01, "amsgrad": True},
    "adamw": {"lr": 0.01, "weight_decay": 0.1},
    "nadam": {"lr": 0.01},
    "radam": {"lr": 0.01},
    "adamax": {"lr": 0.01},
}
STEPS, CUT = 6, 3


def model() -> nn.Module:
    """A float64 MLP whose four tensors ZeRO splits between the ranks."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16, dtype=torch.float64), nn.Tanh(),
                             nn.Linear(16, 4, dtype=torch.float64))


def data(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s batch of step ``step``."""
    gen = torch.Generator().manual_seed(100 * step + rank)
    return (torch.randn(4, 8, generator=gen, dtype=torch.float64),
            torch.randn(4, 4, generator=gen, dtype=torch.float64))


def _flat(m: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in m.parameters()])


def _zero(name: str, m: nn.Module, bucket_view: bool, engine: str | None) -> Any:
    from torch.distributed.optim import ZeroRedundancyOptimizer

    extra = {} if engine is None else {"engine": engine}
    return ZeroRedundancyOptimizer(m.parameters(), optimizer_class=OPTIMIZERS[name],
                                   parameters_as_bucket_view=bucket_view,
                                   **SETTINGS[name], **extra)


def _train(m: nn.Module, opt: Any, rank: int, steps: range) -> None:
    for step in steps:
        opt.zero_grad()
        nn.functional.mse_loss(m(data(step, rank)[0]), data(step, rank)[1]).backward()
        opt.step()


def run_zero(rank: int, world: int, cases: list[tuple[str, bool, str | None]]) -> dict[str, Any]:
    """Train each (optimizer, bucket view, engine) case under DDP + ZeRO; also a resumed run
    (state consolidated on rank 0, saved, loaded into a fresh ZeRO) for the default case."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    out: dict[str, Any] = {}
    for name, bucket_view, engine in cases:
        m = DDP(model())
        opt = _zero(name, m.module, bucket_view, engine)
        _train(m, opt, rank, range(STEPS))
        out[f"{name}/{bucket_view}/{engine}"] = _flat(m.module)
        if bucket_view or engine is not None:
            continue
        m = DDP(model())
        opt = _zero(name, m.module, False, None)
        _train(m, opt, rank, range(CUT))
        opt.consolidate_state_dict(to=0)
        saved = [None]
        if rank == 0:
            buffer = io.BytesIO()
            torch.save({"opt": opt.state_dict(), "model": m.module.state_dict()}, buffer)
            saved = [buffer.getvalue()]
        dist.broadcast_object_list(saved, src=0)
        state = torch.load(io.BytesIO(saved[0]), weights_only=True)
        m = DDP(model())
        m.module.load_state_dict(state["model"])
        opt = _zero(name, m.module, False, None)
        opt.load_state_dict(state["opt"])
        _train(m, opt, rank, range(CUT, STEPS))
        out[f"{name}/resumed"] = _flat(m.module)
    return out


def single_process(name: str, world: int) -> torch.Tensor:
    """The same training on one process: the ranks' batches averaged, torch.optim's class.

    Under a float64 default dtype, so that torch keeps its scalar state (NAdam's
    ``mu_product``) in float64 too.
    """
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        m = model()
        opt = getattr(torch.optim, OPTIMIZERS[name].__name__)(m.parameters(), **SETTINGS[name])
        for step in range(STEPS):
            opt.zero_grad()
            for rank in range(world):
                x, y = data(step, rank)
                (nn.functional.mse_loss(m(x), y) / world).backward()
            opt.step()
        return _flat(m)
    finally:
        torch.set_default_dtype(default)
