"""Tensor rules on DTensor parameters (FSDP2): each matrix assembled on one owning rank.

A tensor rule (Muon's orthogonalisation, SOAP's and Shampoo's
preconditioners) needs each matrix whole, but under
``torch.distributed.fsdp.fully_shard`` every rank holds only its rows
(``Shard(0)``: rank r holds rows r·c … r·c + c − 1 with c = ⌈n / world⌉,
fewer or none on the last ranks when n does not divide). Running the rule
on the local rows would orthogonalise a different matrix: the wrong result
users of other libraries report. Here each matrix instead gets an *owner*,
round-robin over the optimizer's DTensor matrices in order (matrix k is
owned by rank k mod world, so the work is spread), and one step is

1. every rank pads its rows (parameter and gradient) to c rows; one
   ``gather`` per matrix (all issued at once) brings them to the owner;
2. the owner cuts the padding, runs the rule on the whole matrix (its state
   is created there, whole) and keeps the updated matrix;
3. one ``scatter`` per matrix (all issued at once) sends every rank its
   updated rows.

So the results are those of one process running the rule on the whole
matrices (with the averaged gradient FSDP's reduce-scatter gives).
``ASSEMBLE = "everywhere"`` is the simpler alternative, kept for measuring:
every rank all-gathers every matrix and computes every update itself (no
scatter; each rank keeps every matrix's state, world× the memory and the
compute). ``"owner"`` is the default: per rank it computes and stores 1/world
of the matrices and moves about the same bytes (``benchmarks/fsdp2_speed.py``
measures both).

State layout: ``optimizer.state[p]`` of a matrix holds, on its owner, the
rule's state for the whole matrix as plain tensors (``momentum_buffer`` of
shape ``p.shape``), and on the other ranks only the step counter.
``state_dict()`` of each rank therefore saves what that rank owns, and loads
back into the same optimizer on the same number of ranks (ownership follows
the parameters' order). It is not a DTensor layout: sharded
``torch.distributed.checkpoint`` of these states is not supported.

Supported placements: ``Shard(0)`` on a one-dimensional mesh (FSDP2), and
``Replicate()`` (each rank holds the whole matrix and updates it itself).
:func:`check_placement` refuses anything else when the optimizer is built.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from descentlab.engine.base import Run
from descentlab.engine.reference import init_param_state, step_whole
from descentlab.engine.shards import local_tensor

__all__ = ["ASSEMBLE", "check_placement", "step_sharded_matrices"]

#: How sharded matrices are assembled: ``"owner"`` (default) or ``"everywhere"``.
ASSEMBLE = "owner"


def _sharded(p: Tensor) -> bool:
    from torch.distributed.tensor import Shard

    return len(p.placements) == 1 and isinstance(p.placements[0], Shard)  # type: ignore[attr-defined]


def check_placement(p: Tensor, rule_name: str) -> None:
    """Refuse a DTensor ``p`` whose placements a tensor rule cannot assemble (ValueError)."""
    from torch.distributed.tensor import Replicate, Shard

    placements = tuple(p.placements)  # type: ignore[attr-defined]
    if all(isinstance(pl, Replicate) for pl in placements):
        return
    if len(placements) == 1 and isinstance(placements[0], Shard) and placements[0].dim == 0:
        return
    raise ValueError(
        f"{rule_name} needs each matrix whole; a DTensor parameter of shape {tuple(p.shape)} "
        f"with placements {placements} on a mesh of shape {tuple(p.device_mesh.shape)} is not "  # type: ignore[attr-defined]
        "supported: use Shard(0) on a one-dimensional mesh (torch.distributed.fsdp.fully_shard) "
        "or Replicate(), or put the parameter in a group with an elementwise rule"
    )


def _local_grad(p: Tensor) -> Tensor:
    grad = p.grad
    if grad.placements != p.placements:  # type: ignore[union-attr]
        grad = grad.redistribute(p.device_mesh, p.placements)  # type: ignore[union-attr]
    return local_tensor(grad)  # type: ignore[arg-type]


def _padded(t: Tensor, rows: int) -> Tensor:
    """``t`` with zero rows appended up to ``rows`` (``t`` itself when it has them)."""
    if t.shape[0] == rows:
        return t.contiguous()
    out = t.new_zeros((rows, *t.shape[1:]))
    out[: t.shape[0]] = t
    return out


def _check_same_gradients(params: list[Tensor], group: Any) -> list[bool]:
    """Which matrices have a gradient; every rank must agree (else ValueError, not a hang)."""
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int64)
    total = has.clone()
    dist.all_reduce(total, group=group)
    world = dist.get_world_size(group)
    if bool(((total != 0) & (total != world)).any()):
        odd = [tuple(p.shape) for p, t in zip(params, total.tolist(), strict=True) if 0 < t < world]
        raise ValueError(
            f"matrices of shape {odd} have a gradient on some ranks and not on others; a tensor "
            "rule under FSDP2 needs the same parameters to have gradients on every rank"
        )
    return has.bool().tolist()


def _step_one(optimizer: Any, p: Tensor, param: Tensor, grad: Tensor, run: Run) -> None:
    """The rule on the whole matrix ``param`` (in place), its state in ``optimizer.state[p]``."""
    state = optimizer.state[p]
    if len(state) <= 1:  # nothing yet, or the step counter of a rank that did not own it
        step = state.get("step")
        init_param_state(run.rule, param, state, run.flags, run.h)
        if step is not None:
            state["step"] = step
    state["step"] += 1
    step_whole(param, -grad if run.maximize else grad, state, run.at(int(state["step"])))


def _count(optimizer: Any, p: Tensor) -> None:
    state = optimizer.state[p]
    if "step" not in state:
        state["step"] = torch.zeros((), dtype=torch.float32)
    state["step"] += 1


def step_sharded_matrices(
    optimizer: Any, params: list[Tensor], first: int, run: Run
) -> None:
    """One step of tensor rule ``run.rule`` for DTensor ``params`` (see the module docstring).

    ``first`` is the position of ``params[0]`` among the optimizer's DTensor
    matrices (ownership is round-robin over that order).
    """
    replicated = [p for p in params if not _sharded(p)]
    for p in replicated:
        if p.grad is not None:
            state = optimizer.state[p]
            if not state:
                init_param_state(run.rule, local_tensor(p), state, run.flags, run.h)
            state["step"] += 1
            grad = _local_grad(p)
            step_whole(local_tensor(p), -grad if run.maximize else grad, state,
                       run.at(int(state["step"])))
    sharded = [(k, p) for k, p in enumerate(params, first) if _sharded(p)]
    if not sharded:
        return
    group = sharded[0][1].device_mesh.get_group()  # type: ignore[attr-defined]
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    active = _check_same_gradients([p for _, p in sharded], group)
    work = [(k, p) for (k, p), a in zip(sharded, active, strict=True) if a]
    with torch.no_grad():
        if ASSEMBLE == "everywhere":
            for _, p in work:
                _everywhere(optimizer, p, rank, world, group, run)
        else:
            _owners(optimizer, work, rank, world, group, run)


def _rows(p: Tensor, world: int) -> int:
    return -(-p.shape[0] // world)


def _everywhere(optimizer: Any, p: Tensor, rank: int, world: int, group: Any, run: Run) -> None:
    c = _rows(p, world)
    mine = torch.stack([_padded(local_tensor(p), c), _padded(_local_grad(p), c)])
    parts = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(parts, mine, group=group)
    whole = torch.cat(parts, dim=1)[:, : p.shape[0]]
    param = whole[0].contiguous()
    _step_one(optimizer, p, param, whole[1].contiguous(), run)
    loc = local_tensor(p)
    loc.copy_(param[rank * c : rank * c + loc.shape[0]])


def _owners(optimizer: Any, work: list[tuple[int, Tensor]], rank: int, world: int,
            group: Any, run: Run) -> None:
    gathered, pending = [], []
    for k, p in work:
        owner, c = k % world, _rows(p, world)
        mine = torch.stack([_padded(local_tensor(p), c), _padded(_local_grad(p), c)])
        parts = [torch.empty_like(mine) for _ in range(world)] if owner == rank else None
        dst = dist.get_global_rank(group, owner)
        pending.append(dist.gather(mine, parts, dst=dst, group=group, async_op=True))
        gathered.append(parts)
    for handle in pending:
        handle.wait()
    sends, pending = [], []
    for (k, p), parts in zip(work, gathered, strict=True):
        owner, c = k % world, _rows(p, world)
        if owner == rank:
            whole = torch.cat(parts, dim=1)
            param = whole[0, : p.shape[0]].contiguous()
            _step_one(optimizer, p, param, whole[1, : p.shape[0]].contiguous(), run)
            rows = _padded(param, world * c)
            scatter = list(rows.split(c))
        else:
            _count(optimizer, p)
            scatter = None
        out = torch.empty((c, *p.shape[1:]), dtype=p.dtype, device=local_tensor(p).device)
        src = dist.get_global_rank(group, owner)
        pending.append(dist.scatter(out, scatter, src=src, group=group, async_op=True))
        sends.append(out)
    for handle in pending:
        handle.wait()
    for (_, p), out in zip(work, sends, strict=True):
        loc = local_tensor(p)
        loc.copy_(out[: loc.shape[0]])
