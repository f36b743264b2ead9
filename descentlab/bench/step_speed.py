"""Step speed: one optimizer step of torch.optim against every descentlab engine.

The measuring behind ``descentlab speed`` (:mod:`descentlab.commands.speed`
parses the options, calls :func:`measure` and prints :func:`format_all`).

Everything is measured in ONE process, so that ratios are against references
measured under the same conditions (these machines are shared):

* a bandwidth figure: the STREAM triad ``a = b + s·c`` with torch over
  arrays far larger than the caches (bytes = 3 × 4 per element);
* for every optimizer: torch.optim's for-loop, foreach and (where torch has
  one: SGD, Adagrad, Adam, AdamW) fused implementations, and descentlab's
  ``reference``, ``flat`` and ``compiled`` engines;
* for the optimizers torch lacks (Schedule-Free SGD/AdamW/RAdam, SophiaH,
  AdaHessian, Lion, LARS, LAMB): the reference package's foreach class
  (``schedulefree``, ``pytorch_optimizer``, ``lion_pytorch.foreach``) and
  descentlab's default engine (Lion also: its compiled engine and torch's fused
  Adam, for its per-byte goal), timed step by step in alternation
  (interleaved, so that load changes hit both alike); SophiaH and AdaHessian
  are given a Hessian-diagonal estimate every step (``step(hessian=...)``), so
  the update is timed, not the Hessian-vector products; LARS and LAMB step
  matrices (each tensor viewed as rows of 100), as their trust ratios skip vectors;
* at (a) 20M float32 parameters in 200 tensors and (b) 2,000 tensors of
  1,000 parameters (``--quick``: 2M in 20 tensors and 200 × 1,000);
* in case (b), the default engine (``engine="auto"``) and torch's fused Adam
  timed interleaved (one step of each in turn, order alternating, medians of
  ``4 × --repeats`` rounds, after its background compiles are ready): the
  goal's ratio (:func:`_measure_default`);
* the ``small`` case: models of 0.1M–5M parameters in 1–50 tensors, the
  default engine against torch's fastest implementation, timed interleaved
  from the third step on (:mod:`descentlab.bench.small_models`).

Each variant gets fresh copies of the same parameters and gradients (the
gradients stay set, as between ``backward`` and ``step``), two warm-up steps
(the first includes compiling), then the median of ``--repeats`` timed steps.
Reported per row: ms/step, GB/s (the minimum traffic of the update: the
parameter and each state buffer read and written, the gradient read), the
ratio to torch's best time for that optimizer, the fraction of the triad
bandwidth, and the peak extra memory allocated during one step (from the
profiler's allocation events). ``--startup`` adds fresh-process timings: the
time to build the optimizer (the flat engines lay out their buffers then) and
the first step of each engine, and the compiled engine's cold and warm compile.

The table is printed (markdown) and written as JSON.
"""

from __future__ import annotations

import functools
import gc
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from descentlab.bench.interleaved_speed import traffic_bytes
from descentlab.machine import describe_machine

__all__ = [
    "ALL_OPTIMIZERS",
    "CASES",
    "measure",
    "format_all",
    "run",
    "triad_bandwidth",
    "peak_extra_bytes",
    "time_steps",
    "format_table",
    "startup_times",
]

CASES = {"a": (200, 100_000), "b": (2000, 1000)}
QUICK_CASES = {"a": (20, 100_000), "b": (200, 1000)}
OPTIMIZERS = ["sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "nadam", "radam", "adamax"]
SETTINGS: dict[str, dict[str, Any]] = {"sgd": {"lr": 0.01, "momentum": 0.9}}
TORCH_CLASSES = {
    "sgd": "SGD",
    "adagrad": "Adagrad",
    "rmsprop": "RMSprop",
    "adadelta": "Adadelta",
    "adam": "Adam",
    "adamw": "AdamW",
    "nadam": "NAdam",
    "radam": "RAdam",
    "adamax": "Adamax",
}
FUSED = {"sgd", "adagrad", "adam", "adamw"}
#: optimizers whose reference is another package: name → (module, class); timed interleaved
PACKAGE_REFERENCES = {
    "sgd_schedulefree": ("schedulefree", "SGDScheduleFree"),
    "adamw_schedulefree": ("schedulefree", "AdamWScheduleFree"),
    "radam_schedulefree": ("schedulefree", "RAdamScheduleFree"),
    "sophiah": ("pytorch_optimizer", "SophiaH"),
    "adahessian": ("pytorch_optimizer", "AdaHessian"),
    "lion": ("lion_pytorch.foreach", "Lion"),
    "lars": ("pytorch_optimizer", "LARS"),
    "lamb": ("pytorch_optimizer", "Lamb"),
    "adopt": ("pytorch_optimizer", "ADOPT"),
    "ademamix": ("pytorch_optimizer", "AdEMAMix"),
    "prodigy": ("prodigyopt", "Prodigy"),
    "dadapt_adam": ("dadaptation", "DAdaptAdam"),
    "dadapt_sgd": ("dadaptation", "DAdaptSGD"),
}
#: torch's fused Adam, timed interleaved with an optimizer's own rows (its per-byte goal)
FUSED_ADAM = "torch-fused-adam"
#: further variants timed in the interleaved rounds of these optimizers
INTERLEAVED_EXTRAS = {"lion": ["compiled", FUSED_ADAM],
                      **{f"{n}_schedulefree": ["compiled", FUSED_ADAM]
                         for n in ("sgd", "adamw", "radam")}}
#: cases whose goal is the default engine's speed-up over torch's fused Adam, timed
#: interleaved with it (variants ``DEFAULT`` and :data:`FUSED_ADAM`, :func:`_measure_default`)
DEFAULT_VS_FUSED = {"b"}
#: the default engine (``engine="auto"``), what a user gets
DEFAULT = "auto"
#: rounds of the interleaved default-engine timing, per ``--repeats``
DEFAULT_ROUNDS = 4
#: optimizers timed on matrices (their trust ratios skip vectors): each tensor as (-1, 100)
MATRIX_SHAPED = {"lars", "lamb"}
#: optimizers stepped with a Hessian-diagonal estimate given (``step(hessian=...)``)
TAKES_HESSIAN = {"sophiah", "adahessian"}
#: torch.optim classes timed interleaved with ours on their own models
#: (:mod:`descentlab.bench.interleaved_speed`)
INTERLEAVED = ["asgd", "rprop", "adafactor"]
ALL_OPTIMIZERS = OPTIMIZERS + list(PACKAGE_REFERENCES) + INTERLEAVED
OUR_ENGINES = ["reference", "flat", "compiled"]


def triad_bandwidth(n: int = 20_000_000, repeats: int = 20) -> float:
    """STREAM triad ``a = b + s·c`` over float32 arrays of ``n`` elements, in GB/s.

    Like STREAM, the best of ``repeats`` runs (a bandwidth limit, not a typical time).
    """
    b, c = torch.rand(n), torch.rand(n)
    a = torch.empty(n)
    times = []
    for _ in range(repeats + 2):
        start = time.perf_counter()
        torch.add(b, c, alpha=3.0, out=a)
        times.append(time.perf_counter() - start)
    return 3 * 4 * n / min(times[2:]) / 1e9


def peak_extra_bytes(step: Callable[[], Any]) -> int:
    """Peak bytes allocated (net of frees) during ``step()``, from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    from descentlab.bench.runner import quiet_stderr

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def time_steps(step: Callable[[], Any], repeats: int, budget_s: float = 4.0) -> list[float]:
    """Seconds of up to ``repeats`` calls of ``step`` (at least 3; fewer once over budget)."""
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - began < budget_s):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def _make(name: str, variant: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    import descentlab

    setting = SETTINGS.get(name, {})
    if name in PACKAGE_REFERENCES:
        import importlib

        module, cls_name = PACKAGE_REFERENCES[name]
        if variant == FUSED_ADAM:
            return torch.optim.Adam(params, fused=True)
        if variant == "package-foreach":
            try:
                reference = getattr(importlib.import_module(module), cls_name)
            except ImportError:
                raise SystemExit(
                    f"descentlab speed: timing {name} needs its reference package {module!r} "
                    "(pip install 'descentlab[test]')"
                ) from None
            takes_foreach = "foreach" in inspect.signature(reference).parameters
            opt = reference(params, **({"foreach": True} if takes_foreach else {}), **setting)
        else:
            engine = {} if variant == "descentlab" else {"engine": variant}
            opt = descentlab.make_optimizer(name, params, **engine, **setting)
        if hasattr(opt, "train"):
            opt.train()
        return opt
    if variant.startswith("torch-"):
        cls = getattr(torch.optim, TORCH_CLASSES[name])
        kind = variant.removeprefix("torch-")
        options = {"fused": True} if kind == "fused" else {"foreach": kind == "foreach"}
        return cls(params, **setting, **options)
    return descentlab.make_optimizer(name, params, engine=variant, **setting)


def _row(
    name: str,
    variant: str,
    opt: torch.optim.Optimizer,
    params: list[torch.Tensor],
    step: Callable[[], Any],
    first: float,
    times: list[float],
) -> dict[str, Any]:
    """One result row: median and best step time, traffic, peak extra memory of one more step."""
    return {
        "optimizer": name,
        "variant": variant,
        "ms": 1e3 * statistics.median(times),
        "ms_min": 1e3 * min(times),
        "samples": len(times),
        "first_step_s": first,
        "bytes": traffic_bytes(opt, params),
        "peak_extra_bytes": peak_extra_bytes(step),
    }


def _measure(
    name: str, variant: str, master: list[torch.Tensor], grads: list[torch.Tensor], repeats: int
) -> dict[str, Any]:
    from torch._dynamo.utils import counters

    params = [torch.nn.Parameter(t.clone()) for t in master]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    opt = _make(name, variant, params)
    misses = counters["inductor"]["fxgraph_cache_miss"]
    start = time.perf_counter()
    opt.step()
    first = time.perf_counter() - start
    opt.step()
    times = time_steps(opt.step, repeats)
    row = _row(name, variant, opt, params, opt.step, first, times)
    if variant == "compiled":
        row["compile_cache"] = (
            "cold" if counters["inductor"]["fxgraph_cache_miss"] > misses else "warm"
        )
    del opt, params
    gc.collect()
    return row


def _measure_interleaved(
    name: str, master: list[torch.Tensor], grads: list[torch.Tensor], repeats: int
) -> list[dict[str, Any]]:
    """The reference package's class and ours, one timed step of each in turn (order alternating).

    The reference divides ``p.grad`` in place by its denominator (and adds the
    weight decay into it); the gradients then change from step to step but stay
    of order one (no denormals), so its time is that of a normal step.
    """
    from descentlab.bench.interleaved_speed import interleave

    variants = ["package-foreach", "descentlab", *INTERLEAVED_EXTRAS.get(name, [])]
    if name in MATRIX_SHAPED:
        master, grads = ([t.reshape(-1, 100) for t in ts] for ts in (master, grads))
    step_of = (
        (lambda opt: functools.partial(opt.step, hessian=[g.abs() for g in grads]))
        if name in TAKES_HESSIAN
        else (lambda opt: opt.step)
    )
    makers = {v: functools.partial(_make, name, v) for v in variants}
    runs = interleave(makers, master, grads, repeats, step_of)
    rows = [_row(name, variant, opt, params, step, first, times)
            for variant, (opt, params, step, first, times) in runs.items()]
    del runs
    gc.collect()
    return rows


def _wait_for_kernels() -> None:
    """Wait for the default engine's background compiles (the steps then timed are those of
    a run past its first seconds)."""
    from descentlab.engine import kernels

    for kernel in list(kernels._KERNELS.values()):
        kernel.wait()


def _measure_default(
    name: str, master: list[torch.Tensor], grads: list[torch.Tensor], repeats: int
) -> list[dict[str, Any]]:
    """The default engine and torch's fused Adam, one timed step of each in turn (order
    alternating), ``DEFAULT_ROUNDS × repeats`` rounds, after the background compiles are
    ready and a few more steps (:func:`~descentlab.bench.interleaved_speed.interleave`)."""
    from descentlab.bench.interleaved_speed import interleave

    makers = {
        DEFAULT: functools.partial(_make, name, DEFAULT),
        FUSED_ADAM: lambda params: torch.optim.Adam(params, fused=True),
    }
    runs = interleave(makers, master, grads, DEFAULT_ROUNDS * repeats, settle=_wait_for_kernels)
    rows = [_row(name, variant, opt, params, step, first, times)
            for variant, (opt, params, step, first, times) in runs.items()]
    for row in rows:
        row["interleaved"] = True
    del runs
    gc.collect()
    return rows


def run(
    cases: dict[str, tuple[int, int]],
    optimizers: list[str],
    repeats: int,
    engines: list[str],
    progress: bool = True,
) -> dict[str, Any]:
    """Measure every (case, optimizer, variant); return the results as a JSON-ready dict."""
    from tqdm import tqdm

    bandwidth = triad_bandwidth()
    rows = []
    jobs = []
    for case in cases:
        for name in optimizers:
            if name in PACKAGE_REFERENCES:
                jobs.append((case, name, "interleaved"))
                continue
            variants = ["torch-forloop", "torch-foreach"] + (
                ["torch-fused"] if name in FUSED else []
            )
            jobs += [(case, name, v) for v in variants + engines]
            if case in DEFAULT_VS_FUSED:
                jobs.append((case, name, "default"))
    masters: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for case, name, variant in tqdm(jobs, desc="speed", disable=not progress, file=sys.stderr):
        if case not in masters:
            masters.clear()
            count, size = cases[case]
            gen = torch.Generator().manual_seed(0)
            masters[case] = (
                [torch.randn(size, generator=gen) for _ in range(count)],
                [torch.randn(size, generator=gen) * 1e-2 for _ in range(count)],
            )
        if variant == "interleaved":
            measured = _measure_interleaved(name, *masters[case], repeats=repeats)
        elif variant == "default":
            measured = _measure_default(name, *masters[case], repeats=repeats)
        else:
            measured = [_measure(name, variant, *masters[case], repeats=repeats)]
        for row in measured:
            row["case"] = case
            rows.append(row)
    _add_ratios(rows, bandwidth)
    return {
        "load_average": os.getloadavg(),
        "machine": describe_machine(),
        "cases": {k: {"tensors": c, "size": s} for k, (c, s) in cases.items()},
        "triad_GBps": bandwidth,
        "repeats": repeats,
        "rows": rows,
        "goals": _goals(rows),
    }


def _add_ratios(rows: list[dict[str, Any]], bandwidth: float) -> None:
    for row in rows:
        row["GBps"] = row["bytes"] / (row["ms"] * 1e-3) / 1e9
        row["of_bandwidth"] = row["GBps"] / bandwidth
        torch_rows = [
            r
            for r in rows
            if r["case"] == row["case"]
            and r["optimizer"] == row["optimizer"]
            and _is_reference(r["variant"])
            and r["variant"] != FUSED_ADAM
        ]
        row["vs_torch_best"] = row["ms"] / min(r["ms"] for r in torch_rows)


def _is_reference(variant: str) -> bool:
    """torch.optim's implementations, or the reference package's for optimizers torch lacks."""
    return variant.startswith(("torch-", "package-"))


def _pick(rows: list[dict[str, Any]], case: str, name: str, variant: str) -> dict[str, Any] | None:
    for row in rows:
        if (row["case"], row["optimizer"], row["variant"]) == (case, name, variant):
            return row
    return None


def _goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals, evaluated on the measured rows (None where not measured)."""
    goals: dict[str, Any] = {"a": {}, "b": {}}
    for case in ("a", "b"):
        fused = _pick(rows, case, "adam", "torch-fused")
        names = sorted({r["optimizer"] for r in rows if r["case"] == case},
                       key=ALL_OPTIMIZERS.index)
        for name in names:
            ours = [
                r
                for r in rows
                if r["case"] == case
                and r["optimizer"] == name
                and not _is_reference(r["variant"])
                and r["variant"] != "reference"
            ]
            default = _pick(rows, case, name, DEFAULT) if case in DEFAULT_VS_FUSED else None
            fused_here = (None if default is not None else _pick(rows, case, name, FUSED_ADAM)
                          ) or fused
            if not ours or fused_here is None:
                continue
            best = min(ours, key=lambda r: r["ms"])
            foreach = _pick(rows, case, name, "torch-foreach")
            entry = {
                "best_engine": best["variant"],
                "ms": best["ms"],
                "time_per_byte_vs_fused_adam": (best["ms"] / best["bytes"])
                / (fused_here["ms"] / fused_here["bytes"]),
                "speedup_vs_torch_foreach": foreach["ms"] / best["ms"] if foreach else None,
                "speedup_vs_fused_adam": fused_here["ms"] / best["ms"],
                "peak_extra_vs_fused_adam_bytes": best["peak_extra_bytes"]
                - fused_here["peak_extra_bytes"],
            }
            if default is not None:  # the goal: the default engine, interleaved with fused Adam
                interleaved = _pick(rows, case, name, FUSED_ADAM)
                entry.update({
                    "default_ms": default["ms"],
                    "fused_adam_interleaved_ms": interleaved["ms"],
                    "default_speedup_vs_fused_adam_interleaved": interleaved["ms"] / default["ms"],
                })
            goals[case][name] = entry
    return goals


def format_table(result: dict[str, Any]) -> str:
    """The rows as a markdown table, one block per case, plus the goals."""
    lines = [
        f"triad bandwidth (torch, best of 20): {result['triad_GBps']:.1f} GB/s; "
        f"{result['machine'].get('cpu', 'CPU not recorded')}, {result['machine']['threads']} "
        f"threads; steps: median of up to {result['repeats']}; "
        "load average " + ", ".join(f"{x:.2f}" for x in result.get("load_average", [])),
        "x ref best: against torch.optim's best implementation, or the reference package's "
        "(package-*) for optimizers torch lacks",
        "",
    ]
    for case, spec in result["cases"].items():
        lines += [
            f"case ({case}): {spec['tensors']} tensors x {spec['size']:,} float32 params",
            "",
            "| optimizer | variant | ms/step | GB/s | x ref best | x bandwidth | peak extra MB |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for row in result["rows"]:
            if row["case"] != case:
                continue
            note = f" ({row['compile_cache']} cache)" if "compile_cache" in row else ""
            lines.append(
                f"| {row['optimizer']} | {row['variant']}{note} | {row['ms']:.2f} | "
                f"{row['GBps']:.1f} | {row['vs_torch_best']:.2f} | {row['of_bandwidth']:.2f} | "
                f"{row['peak_extra_bytes'] / 1e6:.1f} |"
            )
        lines.append("")
    for case, entries in result["goals"].items():
        if not entries:
            continue
        default_lines: list[str] = []
        lines += [
            f"goals, case ({case}):",
            "",
            "| optimizer | best engine | ms | time/byte vs fused Adam | x faster than "
            "foreach | x faster than fused Adam | extra MB vs fused Adam |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for name, g in entries.items():
            foreach = g["speedup_vs_torch_foreach"]
            if "default_ms" in g:
                default_lines.append(
                    f"| {name} | {g['default_ms']:.2f} | {g['fused_adam_interleaved_ms']:.2f} | "
                    f"{g['default_speedup_vs_fused_adam_interleaved']:.1f} |"
                )
            lines.append(
                f"| {name} | {g['best_engine']} | {g['ms']:.2f} | "
                f"{g['time_per_byte_vs_fused_adam']:.2f} | "
                f"{'-' if foreach is None else f'{foreach:.1f}'} | "
                f"{g['speedup_vs_fused_adam']:.1f} | "
                f"{g['peak_extra_vs_fused_adam_bytes'] / 1e6:+.1f} |"
            )
        lines.append("")
        if default_lines:
            lines += [
                f"default engine (auto) against torch's fused Adam, case ({case}), timed "
                "interleaved (one step of each in turn, medians):",
                "",
                "| optimizer | auto ms | fused Adam ms | x faster than fused Adam (goal >= 10) |",
                "|---|---:|---:|---:|",
                *default_lines,
                "",
            ]
    if "startup" in result:
        lines += [
            "fresh-process first step (20M Adam params in 200 tensors), seconds:",
            "",
            "| engine | import | build optimizer | first step | compile |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in result["startup"]:
            if "error" in row:
                lines.append(f"| {row['label']} | failed: {row['error'][:80]} | | | |")
                continue
            compile_s = row.get("compile_s")
            lines.append(
                f"| {row['label']} | {row['import_s']:.2f} | {row['construct_s']:.3f} | "
                f"{row['first_step_s']:.3f} | {'-' if compile_s is None else f'{compile_s:.2f}'} |"
            )
        lines.append("")
    return "\n".join(lines)


_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch, descentlab
from descentlab.engine import kernels
t1 = time.perf_counter()
engine, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
params = [torch.nn.Parameter(torch.randn(size)) for _ in range(count)]
for p in params:
    p.grad = torch.randn_like(p)
torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # torch's first-use imports
start = time.perf_counter()
opt = descentlab.Adam(params, engine=engine)
built = time.perf_counter() - start
start = time.perf_counter()
opt.step()
first = time.perf_counter() - start
compile_s = max((k.compile_seconds or 0.0 for k in kernels._KERNELS.values()), default=None)
print(json.dumps({"import_s": t1 - t0, "construct_s": built, "first_step_s": first,
                  "compile_s": compile_s or None}))
"""


def startup_times(count: int, size: int) -> list[dict[str, Any]]:
    """First-step seconds of each engine in fresh processes; compiled with cold then warm cache."""
    results = []
    with tempfile.TemporaryDirectory() as empty_cache:
        runs = [
            ("reference", "reference", {}),
            ("flat", "flat", {}),
            ("auto", "auto", {}),
            ("compiled, cold cache", "compiled", {"TORCHINDUCTOR_CACHE_DIR": empty_cache}),
            ("compiled, warm cache", "compiled", {"TORCHINDUCTOR_CACHE_DIR": empty_cache}),
        ]
        for label, engine, env in runs:
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, engine, str(count), str(size)],
                capture_output=True,
                text=True,
                env={**os.environ, **env},
            )
            lines = out.stdout.strip().splitlines()
            if out.returncode != 0 or not lines:
                row = {"error": f"exit code {out.returncode}: {out.stderr.strip()[-300:]}"}
            else:
                row = json.loads(lines[-1])
            row["label"] = label
            row["returncode"] = out.returncode
            results.append(row)
    return results




def measure(
    cases: list[str],
    optimizers: list[str] | None = None,
    *,
    quick: bool = False,
    repeats: int | None = None,
    startup: bool = False,
    save: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Everything ``descentlab speed`` measures, as one JSON-ready dict.

    ``cases`` are names of :data:`CASES` (``a``, ``b``: every engine against
    torch's implementations) and ``small`` (:mod:`descentlab.bench.small_models`);
    ``optimizers`` default to :data:`OPTIMIZERS`; the ASGD, Rprop and Adafactor
    rows are timed interleaved on their own models. ``save`` is called with the
    result so far before the slower fresh-process startup timings.
    """
    optimizers = optimizers or OPTIMIZERS
    engines = [e for e in OUR_ENGINES if not (quick and e == "reference")]
    repeats = repeats or (5 if quick else 10)
    sizes = QUICK_CASES if quick else CASES
    table_cases = {k: v for k, v in sizes.items() if k in cases}
    table = [n for n in optimizers if n not in INTERLEAVED]
    result: dict[str, Any] = {}
    if table and table_cases:
        result = run(table_cases, table, repeats, engines, progress=progress)
    if "small" in cases:
        from descentlab.bench.small_models import run_small_models

        small = [n for n in optimizers if n in OPTIMIZERS]
        if small:
            result["small_models"] = run_small_models(small, 4 * repeats, quick=quick)
    extra = [n for n in optimizers if n in INTERLEAVED]
    if extra:
        from descentlab.bench.interleaved_speed import run_interleaved

        result["interleaved"] = run_interleaved(extra, repeats, quick=quick)
    if save is not None:
        save(result)
    if startup:
        count, size = table_cases.get("a", CASES["a"])
        result["startup"] = startup_times(count, size)
    return result


def format_all(result: dict[str, Any]) -> str:
    """Every table of a :func:`measure` result."""
    parts = []
    if "rows" in result:
        parts.append(format_table(result))
    if "small_models" in result:
        from descentlab.bench.small_models import format_small_models

        parts.append(format_small_models(result["small_models"]))
    if "interleaved" in result:
        from descentlab.bench.interleaved_speed import format_interleaved

        parts.append(format_interleaved(result["interleaved"]))
    return "\n".join(parts)
