"""The distributed benchmark: bytes exchanged against the final metric, per method.

Every (task, method, seed) is one *job*: ``world_size`` local ranks (gloo on
loopback, one thread each) train the task under DDP with the method's
communication hook for the task's step budget, then rank 0 evaluates.

* **Tasks** are the existing problems (``descentlab list``): the digits CNN
  and the character transformer, with their data, model and global batch
  size; each rank draws ``batch_size / world_size`` examples a step with its
  own data order (seed ``100·seed + rank``), and DDP starts every rank from
  rank 0's initial weights. The optimizer is SGD with momentum 0.9 (DGC moves
  the momentum into its hook and runs SGD without momentum). The step budget
  and learning rate are the benchmark's (:data:`TASKS`).
* **Bytes** are counted from the tensors each rank hands to the collectives
  (:mod:`~descentlab.distributed.traffic`), the same rule for torch's hooks
  and ours, averaged over the steps (warm-ups included) and the ranks.
* **Time**: ``wall`` is the measured training time; ``compute`` is the time
  a rank spends outside collectives (collectives are completed where they are
  called, so nothing overlaps). The **modelled** time of a run on a network of
  bandwidth ``B`` is ``steps · (compute + max(sent, received) · 8 / B)`` — a
  full-duplex link, no latency: a model, not a measurement (on one machine,
  gloo over loopback is not bandwidth-bound).

Results are appended to ``<out>/results.jsonl`` by rank 0 the moment a job
ends (one JSON line, flushed and synced), so a killed run resumes where it
stopped; jobs are keyed by a fingerprint of their whole configuration, so a
changed budget never mixes with old results.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from descentlab.distributed.methods import Method, parse_method

__all__ = [
    "BENCH_VERSION",
    "BenchTask",
    "Job",
    "QUICK_TASKS",
    "TASKS",
    "BANDWIDTHS_GBIT",
    "aggregate",
    "goals",
    "load_results",
    "make_jobs",
    "run_benchmark",
]

#: Bumped whenever what a job measures changes.
BENCH_VERSION = 1
#: Link speeds of the modelled time, Gbit/s.
BANDWIDTHS_GBIT: tuple[float, ...] = (1.0, 10.0, 25.0)


@dataclass(frozen=True)
class BenchTask:
    """A problem with the benchmark's budget: steps, SGD learning rate and momentum."""

    problem: str
    steps: int
    lr: float
    momentum: float = 0.9

    @property
    def metric(self) -> str:
        """The problem's target metric (``val_accuracy`` or ``val_loss``)."""
        from descentlab.problems import get_problem

        return get_problem(self.problem).metric


#: The full benchmark's tasks.
TASKS: dict[str, BenchTask] = {
    "digits_cnn": BenchTask("digits_cnn", steps=1000, lr=0.05),
    "stdlib_char_transformer": BenchTask("stdlib_char_transformer", steps=1000, lr=0.3),
}
#: ``--quick`` (CI): the same tasks, 20 steps.
QUICK_TASKS: dict[str, BenchTask] = {k: replace(t, steps=20) for k, t in TASKS.items()}


@dataclass(frozen=True)
class Job:
    """One training run: a task, a method, a seed and a world size."""

    task: BenchTask
    method: str
    seed: int
    world_size: int

    def fingerprint(self) -> str:
        """16 hex digits over everything the job's result depends on."""
        from descentlab.problems import get_problem

        text = json.dumps({"version": BENCH_VERSION, "task": asdict(self.task),
                           "problem": get_problem(self.task.problem).fingerprint(),
                           "method": self.method, "seed": self.seed,
                           "world_size": self.world_size}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_jobs(tasks: list[BenchTask], methods: list[str], seeds: int, world_size: int
              ) -> list[Job]:
    """Every (task, method, seed), tasks outermost."""
    return [Job(t, m, s, world_size) for t in tasks for m in methods for s in range(seeds)]


# -- one job, in a rank ------------------------------------------------------------------------


def _digest(params: list[Any]) -> float:

    return float(sum(p.detach().double().sum() * (i + 1) for i, p in enumerate(params)))


def _run_job(job: Job, rank: int, world: int) -> dict[str, Any]:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from descentlab.distributed.state import CommState, register_comm_hook
    from descentlab.distributed.traffic import Traffic, counting_torch_collectives
    from descentlab.problems import get_problem

    method: Method = parse_method(job.method)
    problem = get_problem(job.task.problem)
    problem = replace(problem, batch_size=problem.batch_size // world)
    task: Any = problem.build(100 * job.seed + rank)
    ddp = DistributedDataParallel(task.model)
    state, hook = method.build(job.task.steps)
    if isinstance(state, CommState):
        register_comm_hook(ddp, state)
        traffic, counting = state.traffic, contextlib.nullcontext()
    else:
        ddp.register_comm_hook(state, hook)
        traffic = Traffic()
        counting = counting_torch_collectives(traffic)
    task.model = ddp
    momentum = 0.0 if method.hook_momentum else job.task.momentum
    opt = torch.optim.SGD(task.parameters(), lr=job.task.lr, momentum=momentum)
    dist.barrier()
    start = time.perf_counter()
    with counting:
        last = [task.train_step(opt) for _ in range(job.task.steps)][-1]
    wall = time.perf_counter() - start
    task.model = ddp.module
    metrics = task.evaluate() if rank == 0 else {}
    return {"sent": traffic.sent, "received": traffic.received, "collectives": traffic.collectives,
            "comm_s": traffic.seconds, "wall_s": wall, "last_loss": last, "metrics": metrics,
            "digest": _digest(task.parameters())}


def _record(job: Job, ranks: list[dict[str, Any]]) -> dict[str, Any]:
    steps = job.task.steps
    metrics = ranks[0]["metrics"]
    return {
        "fingerprint": job.fingerprint(), "task": job.task.problem, "method": job.method,
        "seed": job.seed, "world_size": job.world_size, "steps": steps,
        "metric_name": job.task.metric, "metric": metrics.get(job.task.metric, math.nan),
        "metrics": metrics, "last_loss": ranks[0]["last_loss"],
        "sent_per_step": statistics.fmean(r["sent"] for r in ranks) / steps,
        "received_per_step": statistics.fmean(r["received"] for r in ranks) / steps,
        "sent_per_step_max_rank": max(r["sent"] for r in ranks) / steps,
        "collectives_per_step": ranks[0]["collectives"] / steps,
        "wall_s": max(r["wall_s"] for r in ranks),
        "comm_s": statistics.fmean(r["comm_s"] for r in ranks),
        "compute_s_per_step": statistics.fmean(r["wall_s"] - r["comm_s"] for r in ranks) / steps,
        "ranks_agree": len({r["digest"] for r in ranks}) == 1,
        "load_average": os.getloadavg()[0],
        "finished": time.time(),
    }


def _append(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _worker(rank: int, world: int, jobs: list[Job], path: str) -> int:
    import torch.distributed as dist

    for job in jobs:
        mine = _run_job(job, rank, world)
        everyone: list[Any] = [None] * world
        dist.all_gather_object(everyone, mine)
        if rank == 0:
            _append(Path(path), _record(job, everyone))
    return len(jobs)


# -- the run, in the parent -------------------------------------------------------------------


def load_results(path: Path, repair: bool = False) -> dict[str, dict[str, Any]]:
    """Finished jobs by fingerprint, from whole lines only.

    ``repair=True`` (only when no run is writing) also drops a torn last line
    (a write cut off by a kill) from the file, so that new lines start clean.
    """
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    complete, torn = lines[:-1], lines[-1]
    if torn and repair:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in complete), encoding="utf-8")
        os.replace(tmp, path)
    records = {}
    for line in complete:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        records[record["fingerprint"]] = record
    return records


def _preload(tasks: list[BenchTask]) -> None:
    """Load the data (and the modules DDP imports) here, so the forked ranks inherit them."""
    from descentlab.problems import get_problem

    for task in tasks:
        get_problem(task.problem).build(0)


def run_benchmark(
    jobs: list[Job],
    out: Path,
    progress: bool = True,
    timeout: float = 6 * 3600.0,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the jobs not yet in ``<out>/results.jsonl``; return the records of all ``jobs``.

    One launch of ``world_size`` ranks runs every missing job in order; a
    progress bar counts finished jobs (done before this run included).
    """
    from tqdm import tqdm

    from descentlab.distributed.launch import run_ranks

    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    done = load_results(path, repair=True)
    todo = [j for j in jobs if j.fingerprint() not in done]
    worlds = {j.world_size for j in todo}
    if len(worlds) > 1:
        raise ValueError(f"all jobs must have one world size, got {sorted(worlds)}")
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="distributed",
               disable=not progress, file=sys.stderr, unit="run")
    if todo:
        _preload(list({j.task: None for j in todo}))
        failure: list[BaseException] = []

        def launch() -> None:
            try:
                run_ranks(_worker, todo[0].world_size, todo, str(path), timeout=timeout,
                          collective_timeout=600.0, start_method="fork",
                          preload=("torch._dynamo",))
            except BaseException as exc:  # re-raised below, in this thread
                failure.append(exc)

        thread = threading.Thread(target=launch, name="distributed-benchmark")
        thread.start()
        seen = set(done)
        while thread.is_alive():
            thread.join(timeout=0.5)
            for key, record in load_results(path).items():
                if key not in seen:
                    seen.add(key)
                    bar.update(1)
                    bar.set_postfix_str(f"{record['task']} {record['method']}")
                    if on_result is not None:
                        on_result(record)
        if failure:
            bar.close()
            raise failure[0]
    bar.close()
    records = load_results(path)
    return [records[j.fingerprint()] for j in jobs if j.fingerprint() in records]


# -- summary ------------------------------------------------------------------------------------


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values) or not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, method): bytes, compression ratio, metric mean ± std, times."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["task"], r["method"]), []).append(r)
    dense = {task: statistics.fmean(r["sent_per_step"] for r in rs)
             for (task, method), rs in groups.items() if method == "dense"}
    rows = []
    for (task, method), rs in groups.items():
        mean, std = _mean_std([r["metric"] for r in rs])
        sent = statistics.fmean(r["sent_per_step"] for r in rs)
        received = statistics.fmean(r["received_per_step"] for r in rs)
        compute = statistics.fmean(r["compute_s_per_step"] for r in rs)
        steps = rs[0]["steps"]
        modelled = {f"{b:g}": steps * (compute + max(sent, received) * 8 / (b * 1e9))
                    for b in BANDWIDTHS_GBIT}
        base = dense.get(task)
        rows.append({
            "task": task, "method": method, "ours": parse_method(method).ours, "seeds": len(rs),
            "metric_name": rs[0]["metric_name"], "metric_mean": mean, "metric_std": std,
            "sent_per_step": sent, "received_per_step": received,
            "ratio_sent": base / sent if base and sent else math.nan,
            "ratio_received": (base / received) if base and received else math.nan,
            "wall_s": statistics.fmean(r["wall_s"] for r in rs),
            "compute_s_per_step": compute, "modelled_s": modelled, "steps": steps,
            "ranks_agree": all(r["ranks_agree"] for r in rs),
            "load_average": statistics.fmean(r["load_average"] for r in rs),
        })
    return rows


def _better(row: dict[str, Any], than: float, higher: bool) -> bool:
    value = row["metric_mean"]
    return math.isfinite(value) and (value >= than if higher else value <= than)


def goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals per task, evaluated on the rows (with the margins by which they miss).

    (a) one of our hooks sends >= 100× fewer bytes than dense with the final
    metric within 0.5 percentage points of dense (accuracy) or within 2% of
    dense (loss); (b) at a final metric no worse than torch's best PowerSGD
    setting's, one of our hooks sends fewer bytes than that setting.
    """
    out: dict[str, Any] = {}
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task]
        dense = next((r for r in mine if r["method"] == "dense"), None)
        if dense is None:
            continue
        higher = dense["metric_name"].endswith("accuracy")
        base = dense["metric_mean"]
        floor = base - 0.005 if higher else base * 1.02
        ours = [r for r in mine if r["ours"]]
        within = [r for r in ours if _better(r, floor, higher)]
        best_within = max(within, key=lambda r: r["ratio_sent"], default=None)
        at_100 = [r for r in ours if r["ratio_sent"] >= 100 and math.isfinite(r["metric_mean"])]
        closest = max(at_100, key=lambda r: r["metric_mean"] if higher else -r["metric_mean"],
                      default=None)
        entry: dict[str, Any] = {
            "metric_name": dense["metric_name"], "dense_metric": base, "metric_limit": floor,
            "a_met": bool(best_within and best_within["ratio_sent"] >= 100),
            "a_best_ratio_within_limit": None if best_within is None else {
                "method": best_within["method"], "ratio": best_within["ratio_sent"],
                "metric": best_within["metric_mean"]},
            "a_best_metric_at_100x": None if closest is None else {
                "method": closest["method"], "ratio": closest["ratio_sent"],
                "metric": closest["metric_mean"],
                "miss": (floor - closest["metric_mean"]) if higher
                else (closest["metric_mean"] / base - 1.0)},
        }
        psgd = [r for r in mine if r["method"].startswith("powersgd")
                and math.isfinite(r["metric_mean"])]
        if psgd:
            best = max(psgd, key=lambda r: r["metric_mean"] if higher else -r["metric_mean"])
            as_good = [r for r in ours if _better(r, best["metric_mean"], higher)]
            fewest = min(as_good, key=lambda r: r["sent_per_step"], default=None)
            entry["b_best_powersgd"] = {"method": best["method"], "metric": best["metric_mean"],
                                        "sent_per_step": best["sent_per_step"]}
            entry["b_ours_as_good"] = None if fewest is None else {
                "method": fewest["method"], "metric": fewest["metric_mean"],
                "sent_per_step": fewest["sent_per_step"]}
            entry["b_met"] = bool(fewest and fewest["sent_per_step"] < best["sent_per_step"])
            finite = [r for r in ours if math.isfinite(r["metric_mean"])]
            top = max(finite, key=lambda r: r["metric_mean"] if higher else -r["metric_mean"],
                      default=None)
            entry["b_best_ours"] = None if top is None else {
                "method": top["method"], "metric": top["metric_mean"],
                "sent_per_step": top["sent_per_step"]}
        out[task] = entry
    return out
