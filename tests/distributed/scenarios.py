"""Training scenarios run under real DDP (in the ranks) and by the references (in one process).

A scenario is a dict: the hook (``kind`` and the state's keyword arguments),
steps, learning rate and momentum of SGD, and the situation to exercise
(``accumulate`` micro-batches under ``no_sync()``, ``bucket_view`` for
``gradient_as_bucket_view=True``, ``bucket_cap_mb`` for several buckets,
``resume_at`` to save everything mid-run and continue in a fresh DDP model,
hook state and optimizer, ``optimizer="descentlab"`` for descentlab.SGD).
"""

from __future__ import annotations

import io
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from tests.distributed import reference

IN, HIDDEN, OUT, ROWS = 8, 16, 4, 4


def make_model() -> nn.Module:
    """The float64 MLP every scenario trains (212 parameters)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(IN, HIDDEN, dtype=torch.float64), nn.Tanh(),
                             nn.Linear(HIDDEN, OUT, dtype=torch.float64))


def batch(step: int, rank: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s micro-batch ``micro`` of step ``step`` (fixed by these three numbers)."""
    gen = torch.Generator().manual_seed(10_000 * step + 100 * rank + micro)
    x = torch.randn(ROWS, IN, generator=gen, dtype=torch.float64)
    return x, torch.randn(ROWS, OUT, generator=gen, dtype=torch.float64)


def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error."""
    return nn.functional.mse_loss(model(x), y)


def make_state(spec: dict[str, Any]) -> Any:
    """The hook state of a scenario (``None`` for torch's allreduce hook)."""
    import descentlab.distributed as D

    classes = {"threshold": D.ThresholdState, "topk": D.TopKState, "dgc": D.DGCState,
               "sign": D.SignState}
    return None if spec["kind"] == "dense" else classes[spec["kind"]](**spec.get("state", {}))


def _optimizer(spec: dict[str, Any], params: Any) -> torch.optim.Optimizer:
    import descentlab

    cls = descentlab.SGD if spec.get("optimizer") == "descentlab" else torch.optim.SGD
    return cls(params, lr=spec.get("lr", 0.1), momentum=spec.get("momentum", 0.0))


def _build(spec: dict[str, Any]) -> tuple[Any, Any, torch.optim.Optimizer]:
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel as DDP

    import descentlab.distributed as D

    options: dict[str, Any] = {"gradient_as_bucket_view": spec.get("bucket_view", False)}
    if "bucket_cap_mb" in spec:
        options["bucket_cap_mb"] = spec["bucket_cap_mb"]
    model = DDP(make_model(), **options)
    state = make_state(spec)
    if state is None:
        model.register_comm_hook(None, allreduce_hook)
    elif spec.get("raw_register"):
        model.register_comm_hook(state, type(state).hook)
    else:
        D.register_comm_hook(model, state)
    return model, state, _optimizer(spec, model.parameters())


def _train(model: Any, opt: torch.optim.Optimizer, spec: dict[str, Any], steps: range,
           rank: int) -> None:
    for step in steps:
        opt.zero_grad()
        micro = spec.get("accumulate", 1)
        for m in range(micro):
            x, y = batch(step, rank, m)
            if m < micro - 1:
                with model.no_sync():
                    loss(model, x, y).backward()
            else:
                loss(model, x, y).backward()
        opt.step()


def _roundtrip(obj: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def run_in_rank(rank: int, world: int, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run every scenario in this rank; return the final parameters and counters of each."""
    results = []
    for spec in specs:
        steps = spec.get("steps", 6)
        model, state, opt = _build(spec)
        cut = spec.get("resume_at", steps)
        _train(model, opt, spec, range(cut), rank)
        if cut < steps:  # everything saved, then a fresh model, hook state and optimizer
            saved = _roundtrip({"model": model.module.state_dict(), "opt": opt.state_dict(),
                                "hook": state.state_dict()})
            model, state, opt = _build(spec)
            model.module.load_state_dict(saved["model"])
            opt.load_state_dict(saved["opt"])
            state.load_state_dict(saved["hook"])
            _train(model, opt, spec, range(cut, steps), rank)
        flat = torch.cat([p.detach().reshape(-1) for p in model.module.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        results.append({
            "params": flat,
            "ranks_equal": all(torch.equal(g, flat) for g in gathered),
            "traffic": None if state is None else state.traffic.as_dict(),
            "step": None if state is None else state.step,
        })
    return results


def reference_run(spec: dict[str, Any], world: int) -> torch.Tensor:
    """The same training in one process, with the scheme's reference; the final parameters."""
    model = make_model()
    params = list(model.parameters())
    sizes = [p.numel() for p in params]
    n = sum(sizes)
    kind, kw = spec["kind"], dict(spec.get("state", {}))
    coding = kw.get("value_coding", "fp16")
    if kind == "dense":
        compress = lambda grads: sum(grads) / len(grads)  # noqa: E731
    elif kind == "threshold":
        compress = reference.Threshold(world, n, kw.get("threshold"), kw.get("density"),
                                       kw.get("message", "sign"), coding)
    elif kind == "topk":
        compress = reference.TopK(world, n, kw["density"], coding)
    elif kind == "dgc":
        compress = reference.DGC(world, n, spec["densities"], kw.get("momentum", 0.9),
                                 kw.get("clip_norm"), kw.get("momentum_masking", True), coding)
    else:
        compress = reference.Sign(world, sizes)
    opt = torch.optim.SGD(params, lr=spec.get("lr", 0.1), momentum=spec.get("momentum", 0.0))
    for step in range(spec.get("steps", 6)):
        grads = []
        for rank in range(world):
            total = torch.zeros(n, dtype=torch.float64)
            for m in range(spec.get("accumulate", 1)):
                model.zero_grad()
                loss(model, *batch(step, rank, m)).backward()
                total += torch.cat([p.grad.reshape(-1) for p in params])
            grads.append(total)
        average = compress(grads)
        for p, piece in zip(params, average.split(sizes), strict=True):
            p.grad = piece.view_as(p).clone()
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in params])


def _message(action: Any) -> str:
    try:
        action()
    except (TypeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def bad_input_in_rank() -> dict[str, str]:
    """The errors bad input raises inside a running process group (messages by case)."""
    import descentlab.distributed as D

    model = make_model()
    saved = D.TopKState(density=0.1).state_dict()
    other_world = {**saved, "world_size": saved["world_size"] + 2}
    other_rank = {**saved, "rank": 1 - saved["rank"]}
    other_kind = D.SignState().state_dict()
    ddp = _build({"kind": "topk", "state": {"density": 0.1}})[0]
    shapes = {**saved, "buffers": {"residual": [torch.zeros(3), torch.zeros(5)]}}
    return {
        "non_ddp": _message(lambda: D.register_comm_hook(model, D.TopKState(density=0.1))),
        "hook_without_bucket": _message(lambda: D.threshold_hook(
            D.ThresholdState(threshold=0.1), torch.zeros(3))),
        "wrong_state": _message(lambda: D.topk_hook(D.SignState(), None)),
        "world_size": _message(lambda: D.TopKState(density=0.1).load_state_dict(other_world)),
        "rank": _message(lambda: D.TopKState(density=0.1).load_state_dict(other_rank)),
        "kind": _message(lambda: D.TopKState(density=0.1).load_state_dict(other_kind)),
        "shapes": _message(lambda: _register_loaded(ddp, shapes)),
    }


def _register_loaded(ddp: Any, saved: dict[str, Any]) -> None:
    import descentlab.distributed as D

    state = D.TopKState(density=0.1)
    state.load_state_dict(saved)
    D.register_comm_hook(ddp, state)


def run_all(rank: int, world: int, specs: list[dict[str, Any]]) -> dict[str, Any]:
    """The scenarios, then the bad-input checks, in one launch."""
    return {"scenarios": run_in_rank(rank, world, specs), "errors": bad_input_in_rank()}
