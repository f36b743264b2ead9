"""Optimizers under FSDP2 (``fully_shard``), run in 2 ranks, and their one-process references.

Float64 throughout (gloo reduces float64). The model's matrices have row
counts that do not divide by 2 (9 and 3 rows: 5 + 4 and 2 + 1 per rank), so
FSDP pads the last rank's shard. Each rank trains on its half of every batch;
FSDP's reduce-scatter averages the two halves' gradients, which is the
gradient of the whole batch a single process sees.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import descentlab

BATCH, STEPS, CUT = 8, 5, 3
ELEMENTWISE = {
    "adamw": (descentlab.AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    "adam": (descentlab.Adam, torch.optim.Adam, {"lr": 0.01, "amsgrad": True}),
    "sgd": (descentlab.SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    "nadam": (descentlab.NAdam, torch.optim.NAdam, {"lr": 0.01}),
    "radam": (descentlab.RAdam, torch.optim.RAdam, {"lr": 0.01}),
    "adamax": (descentlab.Adamax, torch.optim.Adamax, {"lr": 0.01}),
    "adagrad": (descentlab.Adagrad, torch.optim.Adagrad, {"lr": 0.05}),
    "adadelta": (descentlab.Adadelta, torch.optim.Adadelta, {"lr": 1.0}),
    "rmsprop": (descentlab.RMSprop, torch.optim.RMSprop,
                {"lr": 0.01, "momentum": 0.5, "centered": True}),
}
MATRIX = {
    "muon": (descentlab.Muon, {"lr": 0.02, "ns_dtype": "float64"}),
    "soap": (descentlab.SOAP, {"lr": 0.01, "precondition_frequency": 2, "max_precondition_dim": 3}),
    "shampoo": (descentlab.Shampoo, {"lr": 0.01, "start_preconditioning_step": 2,
                                     "preconditioning_compute_steps": 2,
                                     "shape_interpretation": False}),
    "mars": (descentlab.MARS, {"lr": 0.01, "weight_decay": 0.1}),
}


def model() -> nn.Module:
    """9×6, 3×9 and 4×3 weights with biases (uneven rows over 2 ranks), float64."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 9, dtype=torch.float64), nn.Tanh(),
                             nn.Linear(9, 3, dtype=torch.float64), nn.Tanh(),
                             nn.Linear(3, 4, dtype=torch.float64))


def sharded() -> nn.Module:
    """:func:`model` under ``fully_shard`` (each Linear, then the whole)."""
    from torch.distributed.fsdp import fully_shard

    m = model()
    for layer in m:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    return fully_shard(m)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole batch of step ``step``."""
    gen = torch.Generator().manual_seed(step)
    return (torch.randn(BATCH, 6, generator=gen, dtype=torch.float64),
            torch.randn(BATCH, 4, generator=gen, dtype=torch.float64))


def train(m: nn.Module, opt: torch.optim.Optimizer, steps: range, rows: slice) -> None:
    """``opt`` on ``rows`` of each batch (all rows in one process)."""
    for step in steps:
        x, y = batch(step)
        opt.zero_grad()
        nn.functional.mse_loss(m(x[rows]), y[rows]).backward()
        opt.step()


def flat(m: nn.Module) -> torch.Tensor:
    """Every parameter, whole, in one vector."""
    return torch.cat([(p.full_tensor() if hasattr(p, "full_tensor") else p).detach().reshape(-1)
                      for p in m.parameters()])


def single(make: Callable[[Any], torch.optim.Optimizer]) -> torch.Tensor:
    """One process, whole batches, :data:`STEPS` steps."""
    m = model()
    train(m, make(m.parameters()), range(STEPS), slice(None))
    return flat(m)


def _rows(rank: int, world: int) -> slice:
    half = BATCH // world
    return slice(rank * half, (rank + 1) * half)


def _elementwise(rows: slice) -> dict[str, Any]:
    from torch.distributed.tensor import DTensor

    out: dict[str, Any] = {}
    for name, (ours, theirs, setting) in ELEMENTWISE.items():
        for label, make in (("torch", lambda p, t=theirs, s=setting: t(p, **s)),
                            *((e, lambda p, o=ours, s=setting, e=e: o(p, engine=e, **s))
                              for e in ("reference", "flat", "compiled", "auto"))):
            if label in ("compiled", "auto") and name not in ("adamw", "sgd"):
                continue
            m = sharded()
            opt = make(m.parameters())
            train(m, opt, range(STEPS), rows)
            out[f"{name}/{label}"] = flat(m)
            if label == "flat":
                layout = opt._engine.layout(opt, opt.param_groups[0])
                out[f"{name}/mirrored"] = layout.shards is not None and not layout.fallback
                p = next(iter(m.parameters()))
                out[f"{name}/state"] = {
                    k: (type(v).__name__, tuple(getattr(v, "placements", ())) == p.placements)
                    for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)
                    and (k == "step" or isinstance(v, DTensor) or v.shape == p.shape)}
    return out


def _checkpoints(rows: slice) -> dict[str, Any]:
    """Ours → torch's AdamW and back through torch.distributed.checkpoint's state dicts."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    _, _, setting = ELEMENTWISE["adamw"]
    makers = {"ours": lambda p: descentlab.AdamW(p, engine="flat", **setting),
              "torch": lambda p: torch.optim.AdamW(p, **setting)}
    out = {}
    for first, then in (("ours", "torch"), ("torch", "ours"), ("ours", "ours")):
        m = sharded()
        opt = makers[first](m.parameters())
        train(m, opt, range(CUT), rows)
        model_sd, optim_sd = get_model_state_dict(m), get_optimizer_state_dict(m, opt)
        m2 = sharded()
        opt2 = makers[then](m2.parameters())
        set_model_state_dict(m2, model_sd)
        set_optimizer_state_dict(m2, opt2, optim_sd)
        train(m2, opt2, range(CUT, STEPS), rows)
        out[f"{first}->{then}"] = flat(m2)
    # the optimizer's own state_dict, saved with torch.save and loaded back
    m = sharded()
    opt = makers["ours"](m.parameters())
    train(m, opt, range(CUT), rows)
    buf = io.BytesIO()
    torch.save({"model": m.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    m2 = sharded()
    opt2 = makers["ours"](m2.parameters())
    m2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    train(m2, opt2, range(CUT, STEPS), rows)
    out["torch.save"] = flat(m2)
    # state written into optimizer.state[p] directly (as ZeroRedundancyOptimizer does)
    m = sharded()
    opt = makers["torch"](m.parameters())
    train(m, opt, range(CUT), rows)
    m2 = sharded()
    m2.load_state_dict(m.state_dict())
    opt2 = makers["ours"](m2.parameters())
    for p, p2 in zip(m.parameters(), m2.parameters(), strict=True):
        opt2.state[p2] = {k: v.clone() for k, v in opt.state[p].items()}
    train(m2, opt2, range(CUT, STEPS), rows)
    out["assigned"] = flat(m2)
    return out


def matrix_params(name: str, m: nn.Module) -> Any:
    """What optimizer ``name`` of :data:`MATRIX` is given: Muon its groups, the others all."""
    return descentlab.muon_param_groups(m) if name == "muon" else m.parameters()


def _matrices(rows: slice) -> dict[str, Any]:
    from descentlab.engine import owners

    out: dict[str, Any] = {}
    for name, (cls, setting) in MATRIX.items():
        for mode in ("owner", "everywhere"):
            owners.ASSEMBLE = mode
            try:
                for engine in ("reference", "flat"):
                    torch.manual_seed(1)  # Shampoo's root iterations start from random draws
                    m = sharded()
                    opt = cls(matrix_params(name, m), engine=engine, **setting)
                    train(m, opt, range(STEPS), rows)
                    out[f"{name}/{mode}/{engine}"] = flat(m)
            finally:
                owners.ASSEMBLE = "owner"
        # resume from each rank's own state_dict; the global generator restarts as in the
        # uninterrupted run and is not rewound by the resume (no process restart here)
        torch.manual_seed(1)
        m = sharded()
        opt = cls(matrix_params(name, m), engine="flat", **setting)
        train(m, opt, range(CUT), rows)
        saved = opt.state_dict()
        m2 = sharded()
        m2.load_state_dict(m.state_dict())
        opt2 = cls(matrix_params(name, m2), engine="flat", **setting)
        opt2.load_state_dict(saved)
        train(m2, opt2, range(CUT, STEPS), rows)
        out[f"{name}/resumed"] = flat(m2)
    m = sharded()
    out["muon/groups"] = descentlab.muon_param_groups(m).table()
    return out


#: Schedule-Free AdamW: its steps on the local shards, then eval() (x) and two more steps
SCHEDULE_FREE = {"lr": 0.01, "weight_decay": 0.1, "warmup_steps": 2}


def schedule_free_run(m: nn.Module, engine: str, rows: slice) -> list[torch.Tensor]:
    """y after :data:`STEPS` steps, x after eval(), y after train() and two more steps."""
    opt = descentlab.AdamWScheduleFree(m.parameters(), engine=engine, **SCHEDULE_FREE)
    opt.train()
    train(m, opt, range(STEPS), rows)
    out = [flat(m)]
    opt.eval()
    out.append(flat(m))
    opt.train()
    train(m, opt, range(STEPS, STEPS + 2), rows)
    return [*out, flat(m)]


def _refusals() -> dict[str, str]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    out = {}
    mesh = init_device_mesh("cpu", (2,))
    mesh2 = init_device_mesh("cpu", (1, 2))
    cases = {"shard1": (mesh, [Shard(1)]), "hsdp": (mesh2, [Replicate(), Shard(0)])}
    for label, (where, placements) in cases.items():
        weight = nn.Parameter(distribute_tensor(torch.randn(4, 6), where, placements))
        try:
            descentlab.Muon([weight])
        except ValueError as err:
            out[label] = str(err)
    return out


def run_fsdp2(rank: int, world: int) -> dict[str, Any]:
    """Every scenario on this rank (one launch for the whole test module)."""
    torch.set_num_threads(1)
    rows = _rows(rank, world)
    schedule_free = {f"schedule_free/{e}": schedule_free_run(sharded(), e, rows)
                     for e in ("reference", "flat")}
    return {**_elementwise(rows), **_checkpoints(rows), **_matrices(rows), **_refusals(),
            **schedule_free}
