"""What SAM and Lookahead cost per step, against the bare base optimizer.

SAM's goal: one extra forward-backward pass per step and nothing more. For
each model and base optimizer this times, interleaved in one process (median
of ``--repeats`` runs of ``--steps`` steps each, one thread):

* ``fb``: one closure call alone (``zero_grad``, forward, loss, backward);
* ``base``: ``base.step(closure)`` — one forward-backward plus the update;
* ``sam``: ``SAM(...).step(closure)`` — two forward-backward passes, the
  perturbation and its undoing, and the update;
* ``lookahead``: ``Lookahead(base, k=5).step(closure)``;
* the same two with ``pytorch_optimizer``'s SAM (``closure(); step(closure)``,
  its protocol) and Lookahead, for comparison.

SAM's *extra* is ``sam - base - fb``: what a step costs beyond the one extra
forward-backward pass (the global norm, saving, perturbing and restoring the
weights), shown in ms and as a fraction of the base step. Being a difference
of noisy timings it is also measured directly, once per model: ``own`` times
SAM's own work alone — ``first_step()`` and ``second_step()`` over a base
optimizer whose step does nothing, with gradients in place (and, for
descentlab's SAM, the check of the gradients that ``step`` makes), the
fastest of the runs — against one forward-backward pass (median). Times are the
process's CPU time (``time.process_time``), which a loaded machine disturbs
far less than wall time. Prints a table and writes JSON (default
``benchmarks/results/sam_overhead.json``) with the load average at the start
and the end.

    .venv/bin/python benchmarks/sam_overhead.py [--steps 10] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytorch_optimizer
import torch

import descentlab
from descentlab.commands import arguments as a
from descentlab.wrappers import SAM, Lookahead


def mlp(width: int, inputs: int = 64) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(inputs, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
        torch.nn.ReLU(), torch.nn.Linear(width, 10))


def cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 8, 8)), torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64 * 16, 10))


class Transformer(torch.nn.Module):
    """Two encoder layers (d = 64, 4 heads) over 16 tokens of 4 features: 30 tensors."""

    def __init__(self) -> None:
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
        self.embed = torch.nn.Linear(4, 64)
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x.view(-1, 16, 4))).mean(dim=1))


MODELS: dict[str, tuple[Callable[[], torch.nn.Module], int]] = {  # name: (model, batch)
    "mlp 64-256-256-10": (lambda: mlp(256), 128),
    "mlp 64-1024-1024-10": (lambda: mlp(1024), 128),
    "cnn 2 conv on 8x8": (cnn, 128),
    "transformer 2 layers d=64": (Transformer, 32),
}
BASES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "torch SGD(momentum)": lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9),
    "descentlab AdamW": lambda ps: descentlab.AdamW(ps, lr=1e-3),
}


def closure_for(opt: torch.optim.Optimizer, model: torch.nn.Module, batch: int):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 64, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


def time_cases(cases: dict[str, Callable[[], object]], steps: int, repeats: int,
               pick: Callable[[list[float]], float] = statistics.median) -> dict[str, float]:
    """Seconds per call (``pick`` of the runs, default the median); cases are interleaved
    so machine load hits all alike."""
    for fn in cases.values():
        for _ in range(5):
            fn()
    runs: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.process_time()
            for _ in range(steps):
                fn()
            runs[name].append((time.process_time() - start) / steps)
    return {name: pick(r) for name, r in runs.items()}


class NoStep(torch.optim.Optimizer):
    """An optimizer whose step does nothing (to time SAM's own work alone)."""

    def __init__(self, params) -> None:
        super().__init__(params, {})

    def step(self, closure=None):
        return None


def measure_own_work(make_model, batch: int, steps: int, repeats: int) -> dict[str, float]:
    """Seconds per step of SAM's own work alone (no forward-backward, no update)."""
    torch.manual_seed(0)
    model = make_model()
    ours = SAM(model.parameters(), NoStep, rho=0.05)
    reference = pytorch_optimizer.SAM(model.parameters(), NoStep, rho=0.05)
    closure_for(ours, model, batch)()
    grads = [p.grad for p in model.parameters()]

    def with_grads(step):
        def run():
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g
            step()
        return run

    params = list(model.parameters())

    def our_work():
        ours._norm_of_current_gradients()
        ours.first_step()
        ours.second_step()

    def reference_work():
        reference.first_step()
        reference.second_step()

    cases = {"own": with_grads(our_work), "own_reference": with_grads(reference_work),
             "set_grads": with_grads(lambda: params)}
    with torch.no_grad():  # a fixed amount of work: the fastest run is the least disturbed
        t = time_cases(cases, steps, repeats, pick=min)
    return {"own": t["own"] - t["set_grads"], "own_reference": t["own_reference"] - t["set_grads"]}


def measure(make_model, batch: int, make_base, steps: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    names = ("fb", "base", "sam", "sam_reference", "lookahead", "lookahead_reference")
    models = {case: make_model() for case in names}

    def params(case):
        return list(models[case].parameters())

    opts = {
        "fb": make_base(params("fb")),
        "base": make_base(params("base")),
        "sam": SAM(params("sam"), make_base(params("sam")), rho=0.05),
        "sam_reference": pytorch_optimizer.SAM(params("sam_reference"),
                                               lambda groups: make_base(groups), rho=0.05),
        "lookahead": Lookahead(make_base(params("lookahead")), k=5),
        "lookahead_reference": pytorch_optimizer.Lookahead(
            make_base(params("lookahead_reference")), k=5),
    }
    closures = {c: closure_for(opts[c], models[c], batch) for c in names}

    def reference_sam_step():  # its protocol: the gradient at w first
        closures["sam_reference"]()
        opts["sam_reference"].step(closures["sam_reference"])

    cases = {"fb": closures["fb"]}
    cases.update({c: (lambda c=c: opts[c].step(closures[c]))
                  for c in ("base", "sam", "lookahead", "lookahead_reference")})
    cases["sam_reference"] = reference_sam_step
    return time_cases(cases, steps, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=a.positive_int, default=10)
    ap.add_argument("--repeats", type=a.positive_int, default=7)
    ap.add_argument("--out", default="benchmarks/results/sam_overhead.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    rows = []
    for model_name, (make_model, batch) in MODELS.items():
        params = sum(p.numel() for p in make_model().parameters())
        own = measure_own_work(make_model, batch, args.steps * 5, args.repeats)
        for base_name, make_base in BASES.items():
            t = {**measure(make_model, batch, make_base, args.steps, args.repeats), **own}
            extra = t["sam"] - t["base"] - t["fb"]
            rows.append({
                "model": model_name, "params": params, "batch": batch, "base": base_name,
                "ms": {k: v * 1e3 for k, v in t.items()},
                "sam_over_base": t["sam"] / t["base"],
                "sam_reference_over_base": t["sam_reference"] / t["base"],
                "sam_extra_ms": extra * 1e3,
                "sam_extra_over_base": extra / t["base"],
                "sam_reference_extra_ms": (t["sam_reference"] - t["base"] - t["fb"]) * 1e3,
                "sam_own_over_fb": t["own"] / t["fb"],
                "sam_reference_own_over_fb": t["own_reference"] / t["fb"],
                "lookahead_over_base": t["lookahead"] / t["base"],
                "lookahead_reference_over_base": t["lookahead_reference"] / t["base"],
            })
    load_end = os.getloadavg()
    print(f"CPU time, 1 thread; median of {args.repeats} interleaved runs of {args.steps} "
          f"steps; load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end")
    print("| model | params | base | fb ms | base ms | SAM ms (ref.) | SAM/base (ref.) | "
          "SAM extra beyond one fb (ref.) | SAM own work / fb (ref.) | Lookahead/base (ref.) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ms = r["ms"]
        print(f"| {r['model']} | {r['params']:,} | {r['base']} | {ms['fb']:.2f} | "
              f"{ms['base']:.2f} | {ms['sam']:.2f} ({ms['sam_reference']:.2f}) | "
              f"{r['sam_over_base']:.2f} ({r['sam_reference_over_base']:.2f}) | "
              f"{r['sam_extra_ms']:+.2f} ms = {r['sam_extra_over_base']:+.0%} of base "
              f"({r['sam_reference_extra_ms']:+.2f} ms) | "
              f"{r['sam_own_over_fb']:.1%} ({r['sam_reference_own_over_fb']:.1%}) | "
              f"{r['lookahead_over_base']:.3f} ({r['lookahead_reference_over_base']:.3f}) |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "config": vars(args), "torch": torch.__version__, "threads": 1,
        "load_average_start": load_start, "load_average_end": load_end, "rows": rows,
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
