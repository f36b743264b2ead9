"""Where Adafactor's factored step goes: its passes over a stack, timed interleaved in one process.

A stack of ``--count`` matrices of ``--size``² (float32; 24 of 384² by
default, 14 MB per tensor). In each round, in turn (the order reversed every
other round), one step each of: torch.optim.Adafactor's for-loop;
descentlab's Adafactor with its C library
(:mod:`descentlab.rules.adafactor_kernel`) as scheduled by default, with
‖θ‖² forced into pass 1 and into pass 2; and without the library (the eager
torch passes). The default library step's two calls (pass 1; passes 2 and 3)
are timed inside that step, the rest of it is the O(m + n) statistics in
torch and the optimizer's own work. For comparison, the eager step's seven
passes are timed alone on a stack of the same size, with two bandwidth
references (a sum over θ: one read; ``copy_``: a read and a write).

Bytes are the stack traffic a part needs at least (S = one stack's bytes):
pass 1 reads G (and θ when ‖θ‖² is taken there); passes 2 and 3 read G and
θ, read them again from the thread's own cache, and write θ (3S). Each
part's median wall time and process CPU time are given (the CPU time is
steadier under load with ``--threads 1``; with more threads it counts every
thread, spinning included). Prints a table and writes JSON (with the load
average) to ``benchmarks/results/adafactor_passes.json``.

Usage: ``python benchmarks/adafactor_passes.py [--count 24] [--size 384] [--repeats 20]
[--threads N] [--json PATH]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

import descentlab
from descentlab.commands import arguments as a
from descentlab.rules import adafactor_kernel as fused

#: descentlab's step variants: the module setting each runs with (None: the defaults)
VARIANTS = {
    "descentlab, library": None,
    "descentlab, library, ‖θ‖² in pass 1": ("CACHED", 0),
    "descentlab, library, ‖θ‖² in pass 2": ("CACHED", 1 << 62),
    "descentlab, eager passes": ("FUSED_MIN", 1 << 62),
}
PASS_1, PASSES_23 = "  in that step: pass 1", "  in that step: passes 2+3"
REST = "  in that step: the rest (statistics, optimizer)"


@contextlib.contextmanager
def _setting(name: str, value: Any) -> Iterator[None]:
    """The block runs with ``adafactor_kernel.<name> = value``."""
    saved = getattr(fused, name)
    setattr(fused, name, value)
    try:
        yield
    finally:
        setattr(fused, name, saved)


def _timed(function: Callable, into: list) -> Callable:
    """``function``, appending (wall, CPU) seconds of each call to ``into``."""
    def call(*args: Any) -> Any:
        start, cpu = time.perf_counter(), time.process_time()
        out = function(*args)
        into.append((time.perf_counter() - start, time.process_time() - cpu))
        return out

    return call


def _steppers(count: int, size: int, inside: dict[str, list]) -> dict[str, Callable[[], Any]]:
    gen = torch.Generator().manual_seed(0)
    master = [torch.randn(size, size, generator=gen) for _ in range(count)]
    grads = [torch.randn(size, size, generator=gen) * 1e-2 for _ in range(count)]
    sums, descend = _timed(fused.sums, inside[PASS_1]), _timed(fused.descend, inside[PASSES_23])
    out = {}
    for name in ("torch for-loop", *VARIANTS):
        params = [torch.nn.Parameter(m.clone()) for m in master]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        if name == "torch for-loop":
            out[name] = torch.optim.Adafactor(params, foreach=False).step
            continue
        opt = descentlab.Adafactor(params)

        def step(opt=opt, setting=VARIANTS[name]):
            if setting is not None:
                with _setting(*setting):
                    return opt.step()
            with _setting("sums", sums), _setting("descend", descend):
                return opt.step()

        out[name] = step
    return out


def _eager_passes(count: int, size: int) -> dict[str, tuple[Callable[[], Any], int]]:
    """The eager step's passes alone: (function, the stack bytes it moves at least)."""
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(count, size, size, generator=gen)
    grad = torch.randn(count, size, size, generator=gen) * 1e-2
    scratch = torch.empty_like(grad)
    rows = torch.rand(count, size, 1, generator=gen) + 0.5
    cols = torch.rand(count, 1, size, generator=gen) + 0.5
    s = theta.nbytes
    return {
        "reference: sum of θ (one read)": (lambda: theta.sum(), s),
        "reference: copy θ (read + write)": (lambda: scratch.copy_(theta), 2 * s),
        "eager alone: ‖θ‖ per tensor": (
            lambda: torch.linalg.vector_norm(theta.flatten(1), dim=1), s),
        "eager alone: G² into scratch": (lambda: torch.mul(grad, grad, out=scratch), 2 * s),
        "eager alone: column sums": (lambda: scratch.sum(dim=-2, keepdim=True), s),
        "eager alone: row sums": (lambda: scratch.sum(dim=-1, keepdim=True), s),
        "eager alone: G diag(b) into scratch": (
            lambda: torch.mul(grad, cols, out=scratch), 2 * s),
        "eager alone: row norms": (lambda: torch.linalg.vector_norm(scratch, dim=-1), s),
        "eager alone: θ addcmul": (lambda: theta.addcmul_(scratch, rows, value=-1e-9), 3 * s),
    }


def _interleave(funcs: dict[str, Callable[[], Any]], repeats: int,
                inside: dict[str, list]) -> dict[str, list[tuple[float, float]]]:
    for f in funcs.values():  # warm-up: state made
        f()
        f()
    for calls in inside.values():
        calls.clear()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in funcs}
    order = list(funcs)
    for i in range(repeats):
        for name in order if i % 2 == 0 else order[::-1]:
            start, cpu = time.perf_counter(), time.process_time()
            funcs[name]()
            times[name].append((time.perf_counter() - start, time.process_time() - cpu))
    return times


def _row(name: str, ts: list[tuple[float, float]], moved: int | None) -> dict[str, Any]:
    ms = 1e3 * statistics.median(t for t, _ in ts)
    return {"part": name, "ms": ms, "ms_min": 1e3 * min(t for t, _ in ts),
            "cpu_ms": 1e3 * statistics.median(c for _, c in ts), "bytes": moved,
            "GB/s": None if moved is None else moved / (ms * 1e-3) / 1e9}


def main() -> None:
    """Parse the arguments, time the steps and passes, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=a.positive_int, default=24)
    parser.add_argument("--size", type=a.positive_int, default=384)
    parser.add_argument("--repeats", type=a.positive_int, default=20)
    parser.add_argument("--threads", type=a.positive_int, default=None,
                        help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path,
                        default=Path("benchmarks/results/adafactor_passes.json"))
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    lib = fused.LIBRARY.wait()
    build = time.perf_counter() - start
    inside: dict[str, list] = {PASS_1: [], PASSES_23: []}
    steps = _steppers(args.count, args.size, inside)
    eager = _eager_passes(args.count, args.size)
    times = _interleave({**steps, **{k: f for k, (f, _) in eager.items()}}, args.repeats,
                        inside)
    s = args.count * args.size * args.size * 4
    plan = fused.stack(*(torch.empty(args.count, args.size, args.size),) * 2)
    first = s if plan is not None and plan.theta_here else 2 * s
    rows = [_row(name, times[name], None) for name in steps]
    if lib is not None:
        step = times["descentlab, library"]
        rest = [(t - a1 - a2, c - c1 - c2) for (t, c), (a1, c1), (a2, c2)
                in zip(step, inside[PASS_1], inside[PASSES_23], strict=True)]
        rows += [_row(PASS_1, inside[PASS_1], first),
                 _row(PASSES_23, inside[PASSES_23], 3 * s), _row(REST, rest, None)]
    rows += [_row(name, times[name], moved) for name, (_, moved) in eager.items()]
    forloop = rows[0]["ms"]
    for r in rows:
        r["x torch for-loop"] = forloop / r["ms"] if r["part"] in steps else None
    read = s / (statistics.median(t for t, _ in times["reference: sum of θ (one read)"]))
    result = {"count": args.count, "size": args.size, "repeats": args.repeats,
              "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
              "library": lib is not None, "library_error": fused.LIBRARY.error,
              "library_ready_seconds": build, "stack_bytes": s,
              "theta_sq_in_pass": None if plan is None else 2 if plan.theta_here else 1,
              "read_bandwidth_GB/s": read / 1e9,
              "library_passes_at_read_bandwidth_ms": (first + 3 * s) / read * 1e3,
              "rows": rows}
    load = ", ".join(f"{x:.1f}" for x in result["load_average"])
    print(f"{args.count} of {args.size}² float32, {result['threads']} threads, load average "
          f"{load}, {args.repeats} rounds; library ready in {build:.2f} s"
          + (f", ‖θ‖² in pass {result['theta_sq_in_pass']}" if lib is not None
             else f" (unavailable: {fused.LIBRARY.error})"))
    print("\n| part | ms | CPU ms | GB/s | x torch for-loop |\n|---|---:|---:|---:|---:|")
    for r in rows:
        gbs = "-" if r["GB/s"] is None else f"{r['GB/s']:.1f}"
        x = "-" if r["x torch for-loop"] is None else f"{r['x torch for-loop']:.2f}"
        print(f"| {r['part']} | {r['ms']:.2f} | {r['cpu_ms']:.2f} | {gbs} | {x} |")
    print(f"\nread bandwidth (sum of θ) {result['read_bandwidth_GB/s']:.1f} GB/s: the library's "
          f"passes' bytes take {result['library_passes_at_read_bandwidth_ms']:.2f} ms at it")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
