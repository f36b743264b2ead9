"""Our optimizers under FSDP2 (``fully_shard``) today: results and step time, 2 ranks.

What happens now, before the engines learn to work on DTensor local shards
(issue 13, item 5; waits for the core-v2 engine rework): each rank holds
DTensor parameters, which the flat engines cannot flatten, so every step
falls back to the per-tensor reference loop. This script records

* **results** (float64, 256-wide layers, 5 steps): each descentlab optimizer
  under FSDP2 (2 ranks, gloo, each rank half of every batch) against
  torch.optim's class under FSDP2 on the same data (the same sharded
  gradients), and both against one process with the whole batch: the
  largest relative parameter difference;
* **step time**: the median ``optimizer.step()`` time per rank under FSDP2 for
  torch's AdamW (for-loop, foreach, fused) and descentlab's AdamW on each
  engine, on a 4-layer MLP of 1024-wide layers (4.2M parameters, 2.1M a rank),
  steps of the variants interleaved.

Writes ``benchmarks/results/fsdp2_today.json`` and prints a table.

    python benchmarks/fsdp2_today.py [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import descentlab
from descentlab.distributed import run_ranks

WIDTH, PARITY_WIDTH, LAYERS, BATCH = 1024, 256, 4, 32
PARITY = ["sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "nadam", "radam", "adamax"]
SETTINGS = {"sgd": {"lr": 0.01, "momentum": 0.9}, "adadelta": {"lr": 1.0}}
SPEED = {
    "torch AdamW for-loop": lambda p: torch.optim.AdamW(p, lr=1e-3, foreach=False),
    "torch AdamW foreach": lambda p: torch.optim.AdamW(p, lr=1e-3, foreach=True),
    "torch AdamW fused": lambda p: torch.optim.AdamW(p, lr=1e-3, fused=True),
    "descentlab AdamW auto": lambda p: descentlab.AdamW(p, lr=1e-3),
    "descentlab AdamW reference": lambda p: descentlab.AdamW(p, lr=1e-3, engine="reference"),
    "descentlab AdamW flat": lambda p: descentlab.AdamW(p, lr=1e-3, engine="flat"),
}


def _setting(name: str) -> dict[str, float]:
    return SETTINGS.get(name, {"lr": 1e-3})


def _model(width: int, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[m for _ in range(LAYERS)
                           for m in (nn.Linear(width, width, dtype=dtype), nn.Tanh())])


def _batch(step: int, width: int, dtype: torch.dtype = torch.float32
           ) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return (torch.randn(BATCH, width, generator=gen, dtype=dtype),
            torch.randn(BATCH, width, generator=gen, dtype=dtype))


def _sharded(width: int, dtype: torch.dtype = torch.float32) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    model = _model(width, dtype)
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    return model


def _full_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.full_tensor().detach().reshape(-1) for p in model.parameters()])


def _train(model: nn.Module, opt: torch.optim.Optimizer, width: int, steps: int,
           rows: slice) -> None:
    for step in range(steps):
        x, y = _batch(step, width, torch.float64)
        opt.zero_grad()
        nn.functional.mse_loss(model(x[rows]), y[rows]).backward()
        opt.step()


def _parity(rank: int, world: int, width: int, steps: int) -> dict[str, torch.Tensor]:
    from descentlab.optim.registry import OPTIMIZERS

    half = BATCH // world
    rows = slice(rank * half, (rank + 1) * half)
    out = {}
    for name in PARITY:
        for side, cls in (("ours", OPTIMIZERS[name]),
                          ("torch", getattr(torch.optim, OPTIMIZERS[name].__name__))):
            model = _sharded(width, torch.float64)
            _train(model, cls(model.parameters(), **_setting(name)), width, steps, rows)
            out[f"{name}/{side}"] = _full_params(model)
    return out


def _speed(rank: int, world: int, width: int, steps: int) -> dict[str, list[float]]:
    variants = {}
    for label, make in SPEED.items():
        model = _sharded(width)
        opt = make(model.parameters())
        x, y = _batch(0, width)
        nn.functional.mse_loss(model(x), y).backward()  # gradients stay: only the step is timed
        opt.step()  # first step: state, layouts
        variants[label] = (model, opt)
    times: dict[str, list[float]] = {label: [] for label in SPEED}
    for _ in range(steps):
        for label, (_, opt) in variants.items():
            start = time.perf_counter()
            opt.step()
            times[label].append(time.perf_counter() - start)
    return times


def _ranks(rank: int, world: int, width: int, steps: int) -> dict[str, object]:
    from descentlab.engine.buffers import flattenable

    model = _sharded(width)
    params = list(model.parameters())
    return {"parity": _parity(rank, world, PARITY_WIDTH, 5),
            "speed": _speed(rank, world, width, steps),
            "flattenable": sum(flattenable(p) for p in params), "tensors": len(params),
            "param_type": type(params[0]).__name__}


def _single(width: int, steps: int) -> dict[str, torch.Tensor]:
    out = {}
    for name in PARITY:
        model = _model(width, torch.float64)
        opt = descentlab.make_optimizer(name, model.parameters(), **_setting(name))
        _train(model, opt, width, steps, slice(None))
        out[name] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def main() -> int:
    """Run both ranks, compare with one process, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    parser.add_argument("--json", default="benchmarks/results/fsdp2_today.json")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    ranks = run_ranks(_ranks, 2, WIDTH, args.steps, timeout=1800, start_method="fork",
                      preload=("torch._dynamo",))
    single = _single(PARITY_WIDTH, 5)
    got = ranks[0]["parity"]
    parity = {name: {"ours_vs_torch_under_fsdp2": _rel(got[f"{name}/ours"], got[f"{name}/torch"]),
                     "ours_fsdp2_vs_one_process": _rel(got[f"{name}/ours"], single[name]),
                     "torch_fsdp2_vs_one_process": _rel(got[f"{name}/torch"], single[name])}
              for name in PARITY}
    speed = {label: statistics.median(ranks[0]["speed"][label] + ranks[1]["speed"][label]) * 1e3
             for label in SPEED}
    fused = speed["torch AdamW fused"]
    result = {"load_average": [load, os.getloadavg()[0]], "world_size": 2, "threads_per_rank": 1,
              "params": sum(p.numel() for p in _model(WIDTH).parameters()),
              "param_type_under_fsdp2": ranks[0]["param_type"],
              "flat_engine_can_flatten": f"{ranks[0]['flattenable']} of {ranks[0]['tensors']}",
              "parity_max_rel_float64_5_steps": parity,
              "step_ms_median": speed,
              "step_vs_torch_fused": {k: v / fused for k, v in speed.items()}}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(f"FSDP2, 2 ranks, {result['params']:,} params; load average {load:.1f}")
    print(f"parameters under fully_shard: {result['param_type_under_fsdp2']}; the flat engine "
          f"can flatten {result['flat_engine_can_flatten']} (the rest: per-tensor loop)")
    print("\n| optimizer (float64, 5 steps) | ours vs torch, both FSDP2 | ours FSDP2 vs one "
          "process | torch FSDP2 vs one process |\n|---|---:|---:|---:|")
    for name, v in parity.items():
        print(f"| {name} | {v['ours_vs_torch_under_fsdp2']:.1e} | "
              f"{v['ours_fsdp2_vs_one_process']:.1e} | {v['torch_fsdp2_vs_one_process']:.1e} |")
    print("\n| AdamW variant | step ms (median) | × torch fused |\n|---|---:|---:|")
    for label, ms in speed.items():
        print(f"| {label} | {ms:.2f} | {ms / fused:.2f} |")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
