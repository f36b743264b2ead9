"""Step time under FSDP2 (``fully_shard``), 2 ranks on gloo: our engines against torch.optim's.

* **AdamW/Adam** on a 4-layer MLP of 1024-wide layers (4.2M parameters,
  2.1M per rank), float32: the median ``optimizer.step()`` time per rank
  (gradients kept from one backward, steps of the variants interleaved) and
  the median whole training step (``zero_grad``, forward, backward with
  FSDP's all-gathers and reduce-scatter, ``step``; interleaved). Ours run
  on the local shards in flat buffers (``engine="auto"``, the default, runs
  torch's own fused Adam kernel on each flat buffer; ``"compiled"``, our
  compiled kernel; ``"flat"``, eager) and
  on the per-tensor DTensor loop (``"reference"``, what every engine did
  before); torch's fused AdamW/Adam is the baseline (its foreach one for
  scale).
* **Muon** on 6 square 512 × 512 hidden matrices (and one 500 × 512, whose
  rows do not divide evenly): ours with each matrix assembled on its owning
  rank (the default), ours assembled on every rank, and torch.optim.Muon on
  the DTensors (DTensor's own matrix products, which redistribute inside).

Writes ``benchmarks/results/fsdp2_speed.json`` (with the load average) and
prints the tables::

    python benchmarks/fsdp2_speed.py [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import descentlab
from descentlab.commands import arguments as a
from descentlab.distributed import run_ranks

WIDTH, LAYERS, BATCH = 1024, 4, 64
MUON_SHAPES = [(512, 512)] * 6 + [(500, 512)]
LR = 1e-3
ADAM: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "torch AdamW fused": lambda p: torch.optim.AdamW(p, lr=LR, fused=True),
    "torch AdamW foreach": lambda p: torch.optim.AdamW(p, lr=LR, foreach=True),
    "torch Adam fused": lambda p: torch.optim.Adam(p, lr=LR, fused=True),
    "descentlab AdamW auto": lambda p: descentlab.AdamW(p, lr=LR),
    "descentlab AdamW compiled": lambda p: descentlab.AdamW(p, lr=LR, engine="compiled"),
    "descentlab AdamW flat": lambda p: descentlab.AdamW(p, lr=LR, engine="flat"),
    "descentlab Adam auto": lambda p: descentlab.Adam(p, lr=LR),
    "descentlab AdamW reference": lambda p: descentlab.AdamW(p, lr=LR, engine="reference"),
}
MUON = ("descentlab Muon, owner", "descentlab Muon, everywhere", "torch.optim.Muon")


def _shard(model: nn.Module) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    return fully_shard(model)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return _shard(nn.Sequential(*[m for _ in range(LAYERS)
                                  for m in (nn.Linear(WIDTH, WIDTH), nn.Tanh())]))


def _muon_model() -> nn.Module:
    torch.manual_seed(0)
    return _shard(nn.Sequential(*[nn.Linear(i, o, bias=False) for o, i in MUON_SHAPES]))


def _loss(model: nn.Module, step: int, width: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(BATCH, width, generator=gen)
    return model(x).square().mean()


def _interleaved(variants: dict[str, Any], steps: int, once: Callable[[Any, int], None]
                 ) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {label: [] for label in variants}
    for step in range(steps):
        for label, v in variants.items():
            start = time.perf_counter()
            once(v, step)
            times[label].append(time.perf_counter() - start)
    return times


def _step_only(pair: tuple[nn.Module, torch.optim.Optimizer], step: int) -> None:
    pair[1].step()


def _training(width: int) -> Callable[[tuple[nn.Module, torch.optim.Optimizer], int], None]:
    def once(pair: tuple[nn.Module, torch.optim.Optimizer], step: int) -> None:
        model, opt = pair
        opt.zero_grad()
        _loss(model, step, width).backward()
        opt.step()
    return once


def _prepared(make: Callable[[Any], torch.optim.Optimizer], build: Callable[[], nn.Module],
              width: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = build()
    opt = make(model.parameters())
    for step in range(2):  # state, layouts, kernels compiled
        opt.zero_grad()
        _loss(model, step, width).backward()
        opt.step()
    return model, opt


def _muon(label: str) -> Callable[[Any], torch.optim.Optimizer]:
    if label == "torch.optim.Muon":
        return lambda p: torch.optim.Muon(p, lr=0.02)
    return lambda p: descentlab.Muon(p, lr=0.02, engine="flat")


def _with_mode(label: str) -> str:
    return "everywhere" if "everywhere" in label else "owner"


def _ranks(rank: int, world: int, steps: int) -> dict[str, Any]:
    from descentlab.engine import owners

    out: dict[str, Any] = {}
    adam = {label: _prepared(make, _mlp, WIDTH) for label, make in ADAM.items()}
    out["adam_step"] = _interleaved(adam, steps, _step_only)
    out["adam_train"] = _interleaved(adam, steps, _training(WIDTH))
    del adam
    muon: dict[str, Any] = {}
    for label in MUON:
        owners.ASSEMBLE = _with_mode(label)
        muon[label] = _prepared(_muon(label), _muon_model, MUON_SHAPES[0][1])

    def muon_step(entry: tuple[str, tuple[nn.Module, torch.optim.Optimizer]], step: int) -> None:
        owners.ASSEMBLE = _with_mode(entry[0])
        entry[1][1].step()

    out["muon_step"] = _interleaved({k: (k, v) for k, v in muon.items()}, steps, muon_step)
    owners.ASSEMBLE = "owner"
    return out


def _table(title: str, times: dict[str, float], base: str) -> list[str]:
    lines = [f"| {title} | ms (median) | × {base} |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:.2f} | {v / times[base]:.2f} |" for k, v in times.items()]
    return lines


def main() -> int:
    """Run both ranks; print the tables and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=a.positive_int, default=20, help="timed steps per variant")
    parser.add_argument("--json", default="benchmarks/results/fsdp2_speed.json")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    load = os.getloadavg()[0]
    ranks = run_ranks(_ranks, 2, args.steps, timeout=3600, start_method="fork",
                      preload=("torch._dynamo",))
    medians = {section: {label: statistics.median(ranks[0][section][label]
                                                  + ranks[1][section][label]) * 1e3
                         for label in ranks[0][section]}
               for section in ranks[0]}
    result = {"load_average": [load, os.getloadavg()[0]], "world_size": 2,
              "threads_per_rank": 1, "steps": args.steps,
              "adam_params": WIDTH * WIDTH * LAYERS + WIDTH * LAYERS,
              "muon_shapes": MUON_SHAPES, "ms_median": medians}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(f"FSDP2, 2 ranks (gloo, 1 thread each); load average {load:.1f} → "
          f"{result['load_average'][1]:.1f}")
    blocks = [_table("optimizer.step(), 4.2M params", medians["adam_step"], "torch AdamW fused"),
              _table("training step, 4.2M params", medians["adam_train"], "torch AdamW fused"),
              _table("Muon optimizer.step(), 7 matrices", medians["muon_step"],
                     "torch.optim.Muon")]
    print("\n\n".join("\n".join(b) for b in blocks))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
