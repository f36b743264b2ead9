"""Low-precision optimizer state: bytes per parameter, step time and final validation loss.

Three measurements, written with the load average to
``benchmarks/results/low_precision_state.json`` and printed as tables:

1. **state bytes per parameter** of Adam, Lion and momentum SGD with each
   ``state_precision``, counted from the state tensors after one step (codes,
   scales, buffers and the per-tensor step counters and seeds), on a model
   of eight 512 × 512 layers with biases, and for bitsandbytes' ``Adam8bit``
   where it is installed;
2. **step time** of Adam with each precision against full state (and
   torch.optim.Adam, and bitsandbytes' ``Adam8bit``), the same gradients,
   one step of each in turn, repeated; the median per optimizer;
3. **quality**: the final validation loss of ``stdlib_char_transformer`` and
   ``digits_cnn`` trained with AdamW (their step budgets) with each
   precision, over three seeds. Their tensors are small (under 4,096
   elements, which keep full state in ``"8bit"``), so the row
   ``8bit (every tensor)`` quantises every tensor, to measure what 8-bit
   state does to them.

Usage:
``python benchmarks/low_precision_state.py [--seeds 3] [--repeats 15] [--threads 1] [--quick]
[--no-quality] [--out PATH]`` (``--no-quality``: bytes and step times only, the quick check
after a change that keeps the arithmetic)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

import descentlab
from descentlab.commands import arguments as a
from descentlab.problems import get_problem
from descentlab.rules import low_precision
from descentlab.rules.low_precision import state_bytes

PRECISIONS = ("full", "bf16", "8bit")
PROBLEMS = {"stdlib_char_transformer": 3e-3, "digits_cnn": 3e-3}  # AdamW's lr for each


def _bitsandbytes():
    try:
        import bitsandbytes
    except ImportError as err:
        return None, f"not installed ({err})"
    return bitsandbytes, bitsandbytes.__version__


def _model_params(width: int = 512, layers: int = 8) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(layers):
        out.append(torch.nn.Parameter(torch.randn(width, width, generator=gen) / width**0.5))
        out.append(torch.nn.Parameter(torch.zeros(width)))
    return out


def _state_bytes_per_param(opt: torch.optim.Optimizer, params) -> float:
    total = sum(state_bytes(opt.state[p]) for p in params)
    return total / sum(p.numel() for p in params)


def bytes_table() -> list[dict]:
    bnb, _ = _bitsandbytes()
    makers = {
        "Adam": lambda ps, prec: descentlab.Adam(ps, state_precision=prec),
        "Lion": lambda ps, prec: descentlab.Lion(ps, state_precision=prec),
        "SGD (momentum)": lambda ps, prec: descentlab.SGD(ps, momentum=0.9, state_precision=prec),
    }
    rows = []
    for name, make in makers.items():
        row = {"optimizer": name}
        for prec in PRECISIONS:
            params = _model_params()
            opt = make(params, prec)
            for p in params:
                p.grad = torch.ones_like(p)
            opt.step()
            row[prec] = round(_state_bytes_per_param(opt, params), 4)
        rows.append(row)
    if bnb is not None:
        params = _model_params()
        opt = bnb.optim.Adam8bit(params, min_8bit_size=low_precision.MIN_8BIT_SIZE)
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        rows.append({"optimizer": "bitsandbytes Adam8bit", "8bit": round(
            _state_bytes_per_param(opt, params), 4)})
    return rows


def step_times(repeats: int) -> dict[str, float]:
    bnb, _ = _bitsandbytes()
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=gen) * 1e-2 for p in _model_params()]
    makers = {
        "torch.optim.Adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
        "full": lambda ps: descentlab.Adam(ps, lr=1e-3, engine="flat"),
        "bf16": lambda ps: descentlab.Adam(ps, lr=1e-3, state_precision="bf16"),
        "8bit": lambda ps: descentlab.Adam(ps, lr=1e-3, state_precision="8bit"),
    }
    if bnb is not None:
        makers["bitsandbytes Adam8bit"] = lambda ps: bnb.optim.Adam8bit(
            ps, lr=1e-3, min_8bit_size=low_precision.MIN_8BIT_SIZE)
    runs = {}
    for name, make in makers.items():
        params = _model_params()
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt = make(params)
        opt.step()  # state created outside the timing
        opt.step()
        runs[name] = opt
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for r in range(repeats):
        for name in order if r % 2 == 0 else reversed(order):
            start = time.perf_counter()
            runs[name].step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def _final_val_loss(problem_name: str, lr: float, precision: str, seed: int) -> float:
    problem = get_problem(problem_name)
    torch.manual_seed(seed)
    task = problem.build(seed)
    opt = descentlab.AdamW(task.parameters(), lr=lr, state_precision=precision)
    for _ in range(problem.steps):
        task.train_step(opt)
    return task.evaluate()["val_loss"]


def quality(seeds: int) -> list[dict]:
    rows = []
    variants = [("full", "full", None), ("bf16", "bf16", None), ("8bit", "8bit", None),
                ("8bit (every tensor)", "8bit", 0)]
    for problem_name, lr in PROBLEMS.items():
        params = get_problem(problem_name).build(0).parameters()
        share = sum(p.numel() for p in params if p.numel() >= low_precision.MIN_8BIT_SIZE)
        for label, precision, threshold in variants:
            saved = low_precision.MIN_8BIT_SIZE
            if threshold is not None:
                low_precision.MIN_8BIT_SIZE = threshold
            try:
                losses = [_final_val_loss(problem_name, lr, precision, s) for s in range(seeds)]
            finally:
                low_precision.MIN_8BIT_SIZE = saved
            rows.append({"problem": problem_name, "state": label, "losses": losses,
                         "mean": statistics.fmean(losses),
                         "share_8bit_sized": share / sum(p.numel() for p in params)})
            print(f"  {problem_name} {label}: {[round(v, 4) for v in losses]}", flush=True)
    by_problem: dict[str, float] = {r["problem"]: r["mean"] for r in rows if r["state"] == "full"}
    for r in rows:
        r["vs_full"] = r["mean"] / by_problem[r["problem"]] - 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=a.positive_int, default=3)
    parser.add_argument("--repeats", type=a.positive_int, default=15)
    parser.add_argument("--threads", type=a.positive_int, default=1,
                        help="torch threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="one seed, five repeats")
    parser.add_argument("--no-quality", action="store_true",
                        help="skip the training runs (bytes and step times only)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "low_precision_state.json")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.repeats = 1, 5
    if min(args.seeds, args.repeats, args.threads) < 1:
        parser.error(f"--seeds, --repeats and --threads must be >= 1, got {args.seeds}, "
                     f"{args.repeats}, {args.threads}")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    _, bnb_version = _bitsandbytes()
    print("state bytes per parameter", flush=True)
    sizes = bytes_table()
    for row in sizes:
        print("  ", row)
    print(f"step time, Adam on 8 × 512² (median of {args.repeats}, interleaved)", flush=True)
    times = step_times(args.repeats)
    for name, ms in times.items():
        print(f"   {name:24s} {ms:8.2f} ms   {ms / times['full']:.2f}× full")
    rows = []
    if not args.no_quality:
        print(f"quality: AdamW, final val_loss over {args.seeds} seed(s)", flush=True)
        rows = quality(args.seeds)
    for r in rows:
        print(f"   {r['problem']:24s} {r['state']:20s} {r['mean']:.4f}  {100 * r['vs_full']:+.2f}%")
    result = {
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bitsandbytes": bnb_version,
        "state_bytes_per_param": sizes,
        "step_ms": {k: round(v, 3) for k, v in times.items()},
        "step_vs_full": {k: round(v / times["full"], 3) for k, v in times.items()},
        "quality": rows,
        "seeds": 0 if args.no_quality else args.seeds,
        "repeats": args.repeats,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} (load average {result['load_average']})")


if __name__ == "__main__":
    main()
