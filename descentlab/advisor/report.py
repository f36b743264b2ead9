"""The advice as one offline HTML file: the choice, the reasons, and the evidence as pictures.

Three matplotlib figures, embedded as base64 PNGs (no network, no scripts):
the range tests (loss against learning rate, chosen rate marked), the
successive-halving runs (metric against step, one panel per rung), and the
budget (evaluations spent by phase against the allowance).
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

from descentlab.advisor.recommendation import Recommendation

__all__ = ["GENERATOR", "figures", "foreign_files", "write_html"]

GENERATOR = '<meta name="generator" content="descentlab advise">'
"""Marks a report as ours: a folder holding another ``report.html`` is refused."""

OUTPUTS = ("report.html", "advice.json")


def foreign_files(folder: str | Path) -> list[str]:
    """Files of ``folder`` the advisor would overwrite that it did not write."""
    folder = Path(folder)
    found = []
    for name in OUTPUTS:
        path = folder / name
        if not path.exists():
            continue
        try:
            head = path.read_text(encoding="utf-8", errors="replace")[:4000]
        except OSError:
            found.append(name)
            continue
        ours = GENERATOR in head if name.endswith(".html") else '"evidence"' in head
        if not ours:
            found.append(name)
    return found


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _nan(xs: list[float]) -> list[float]:
    return [x if math.isfinite(x) and abs(x) < 1e200 else math.nan for x in xs]


def figures(rec: Recommendation) -> dict[str, str]:
    """Base64 PNGs by name: ``range_tests``, ``halving``, ``budget`` (absent when empty)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = rec.evidence
    out: dict[str, str] = {}
    if ev.range_tests:
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        for i, t in enumerate(ev.range_tests):
            color = f"C{i}"
            ax.plot(t.lrs, _nan(t.smoothed), color=color, label=t.candidate)
            ax.axvline(t.lr, color=color, ls="--", lw=0.8)
        ax.set_xscale("log")
        finite = [v for t in ev.range_tests for v in _nan(t.smoothed) if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 100:
            ax.set_yscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss (smoothed)")
        ax.set_title("learning-rate range tests (dashed: chosen rate)")
        ax.legend(fontsize=8)
        out["range_tests"] = _png(fig)
    if ev.rungs:
        fig, axes = plt.subplots(1, len(ev.rungs), figsize=(3.6 * len(ev.rungs), 3.4),
                                 squeeze=False)
        names = sorted({r.candidate for rung in ev.rungs for r in rung})
        for ax, (i, rung) in zip(axes[0], enumerate(ev.rungs), strict=True):
            for run in rung:
                steps = [s for s, _ in run.curve]
                ax.plot(steps, _nan([v for _, v in run.curve]), marker=".",
                        color=f"C{names.index(run.candidate)}", label=run.candidate)
            ax.set_title(f"rung {i + 1}: {rung[0].evaluations if rung else 0} evaluations")
            ax.set_xlabel("step")
            if rec.metric.endswith("loss"):
                vals = [v for run in rung for _, v in run.curve if math.isfinite(v) and v > 0]
                if vals and max(vals) / min(vals) > 100:
                    ax.set_yscale("log")
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel(rec.metric)
        out["halving"] = _png(fig)
    fig, ax = plt.subplots(figsize=(6.5, 1.8))
    left = 0
    for i, (phase, n) in enumerate(ev.spent.items()):
        ax.barh(0, n, left=left, color=f"C{i}", label=f"{phase}: {n}")
        left += n
    ax.axvline(ev.budget, color="k", ls="--", lw=1, label=f"allowed: {ev.budget}")
    ax.set_yticks([])
    ax.set_xlabel("gradient evaluations")
    ax.set_xlim(0, max(ev.budget, left) * 1.05)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"budget: {ev.total_spent} of {ev.budget} ({ev.total_spent / rec.steps:.0%} "
                 f"of {rec.steps} steps)")
    out["budget"] = _png(fig)
    return out


def _table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html(rec: Recommendation, path: str | Path) -> Path:
    """Write the report to ``path`` (folders created) and return the path."""
    path = Path(path)
    figs = figures(rec)
    ev = rec.evidence
    runs = [["candidate", "lr", "rung", "evaluations", rec.metric, "diverged"]]
    for i, rung in enumerate(ev.rungs):
        for r in rung:
            runs.append([r.candidate, f"{r.lr:.3g}", str(i + 1), str(r.evaluations),
                         f"{r.final:.4g}", "yes" if r.diverged else "no"])
    for r in ev.lr_checks:
        runs.append([r.candidate, f"{r.lr:.3g}", "lr check", str(r.evaluations),
                     f"{r.final:.4g}", "yes" if r.diverged else "no"])
    skipped = [["candidate", "why not tried"]] + [[k, v] for k, v in ev.skipped.items()]
    findings = "".join(f"<li>{html.escape(str(f))}</li>" for f in ev.findings) or "<li>none</li>"
    pictures = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{data}"></figure>'
        for name, data in figs.items())
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in rec.reasons)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">{GENERATOR}
<title>descentlab advise: {html.escape(rec.problem)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}
pre{{background:#f5f5f5;padding:1em;overflow:auto}}img{{max-width:100%}}</style></head>
<body><h1>Advice for {html.escape(rec.problem)}</h1>
<p><b>{html.escape(rec.candidate)}</b> (<code>{html.escape(rec.optimizer)}</code>),
lr {rec.lr:.4g}; confidence {rec.confidence:.2f} ({rec.confidence_label});
{ev.total_spent} of {ev.budget} allowed gradient evaluations spent
({ev.total_spent / rec.steps:.0%} of the {rec.steps} training steps).</p>
<h2>Why</h2><ul>{reasons}</ul>
<h2>Code</h2><pre>{html.escape(rec.code())}</pre>
<h2>Evidence</h2>{pictures}
<h3>Runs</h3>{_table(runs)}
<h3>Not tried</h3>{_table(skipped) if ev.skipped else "<p>every candidate was tried</p>"}
<h3>Findings in the chosen candidate's run</h3><ul>{findings}</ul>
</body></html>
"""
    write_atomically(path, page)
    return path


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and one rename (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
