"""The distributed benchmark's outputs: markdown table, PNG figure, offline HTML page, JSON.

The figure plots, per task, the bytes each rank sends per step (log scale)
against the final validation metric (mean ± one standard deviation over
seeds): torch's hooks as squares, ours as circles, dense training as a dashed
line. The HTML page embeds the figure (base64 PNG) and the tables: nothing
is loaded from the network.
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path
from typing import Any

from descentlab.distributed.benchmark import BANDWIDTHS_GBIT

__all__ = ["bytes_figure", "markdown_tables", "goals_text", "write_outputs"]


def _metric(row: dict[str, Any]) -> str:
    mean, std = row["metric_mean"], row["metric_std"]
    if not math.isfinite(mean):
        return "diverged"
    if row["metric_name"].endswith("accuracy"):
        return f"{100 * mean:.2f} ± {100 * std:.2f} %"
    return f"{mean:.4f} ± {std:.4f}"


def _bytes(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def markdown_tables(rows: list[dict[str, Any]]) -> str:
    """One markdown table per task, methods in the order of the rows."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        first = mine[0]
        speeds = " | ".join(f"model s @ {b:g} Gbit/s" for b in BANDWIDTHS_GBIT)
        lines += [
            f"**{task}** — {first['steps']} steps, {first['metric_name']}, "
            f"{first['seeds']} seed(s), load average {first['load_average']:.1f}",
            "",
            f"| method | sent B/step | received B/step | × fewer sent | × fewer received | "
            f"{first['metric_name']} | wall s | compute ms/step | {speeds} |",
            "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(BANDWIDTHS_GBIT),
        ]
        for r in mine:
            modelled = " | ".join(f"{r['modelled_s'][f'{b:g}']:.2f}" for b in BANDWIDTHS_GBIT)
            lines.append(
                f"| {r['method']} | {_bytes(r['sent_per_step'])} | "
                f"{_bytes(r['received_per_step'])} | {r['ratio_sent']:.1f} | "
                f"{r['ratio_received']:.1f} | {_metric(r)} | {r['wall_s']:.1f} | "
                f"{1e3 * r['compute_s_per_step']:.2f} | {modelled} |"
            )
        lines.append("")
    return "\n".join(lines)


def _unit(value: float, higher: bool) -> str:
    return f"{100 * value:.2f}%" if higher else f"{value:.4f}"


def _versus(value: float, dense: float, higher: bool) -> str:
    """Against dense: points of accuracy, or per cent of loss."""
    return f"{100 * (value - dense):+.2f} pp" if higher else f"{100 * (value / dense - 1):+.1f}%"


def _goal_lines(task: str, g: dict[str, Any]) -> list[str]:
    higher = g["metric_name"].endswith("accuracy")
    dense = g["dense_metric"]
    limit = "−0.5 pp" if higher else "+2%"

    def said(r: dict[str, Any]) -> str:
        return f"{_unit(r['metric'], higher)}, {_versus(r['metric'], dense, higher)} against dense"

    a = g["a_best_ratio_within_limit"]
    if g["a_met"]:
        lines = [f"{task}: (a) met — {a['method']} sends {a['ratio']:.0f}× fewer bytes "
                 f"({said(a)}; limit {limit})"]
    else:
        near = g["a_best_metric_at_100x"]
        best = "none of ours is within the limit" if a is None else (
            f"within the limit at most {a['ratio']:.0f}× ({a['method']})")
        miss = "none of ours reaches 100×" if near is None else (
            f"at ≥ 100× the best is {near['method']} ({near['ratio']:.0f}×, {said(near)}; "
            f"limit {limit})")
        lines = [f"{task}: (a) missed — {best}; {miss}"]
    if "b_met" in g:
        p, o, top = g["b_best_powersgd"], g["b_ours_as_good"], g.get("b_best_ours")
        head = (f"{task}: (b) {'met' if g['b_met'] else 'missed'} — best PowerSGD "
                f"{p['method']} {_unit(p['metric'], higher)} at {p['sent_per_step']:,.0f} B/step")
        if o is not None:
            tail = (f"; {o['method']} {_unit(o['metric'], higher)} at "
                    f"{o['sent_per_step']:,.0f} B/step "
                    f"({p['sent_per_step'] / o['sent_per_step']:.0f}× fewer)")
        elif top is not None:
            tail = (f"; none of ours is as good: our best is {top['method']} "
                    f"{_unit(top['metric'], higher)} at {top['sent_per_step']:,.0f} B/step")
        else:
            tail = "; none of ours finished"
        lines.append(head + tail)
    return lines


def goals_text(goals: dict[str, Any]) -> str:
    """The goals, one line each, with the margin of a miss."""
    return "\n".join(line for task, g in goals.items() for line in _goal_lines(task, g))


def bytes_figure(rows: list[dict[str, Any]]) -> Any:
    """Bytes sent per step against the final metric, one panel per task.

    The metric axis spans dense training's value ± a window (3 points of
    accuracy, or 10% of loss); runs outside it are drawn on the edge as
    triangles labelled with their value.
    """
    from matplotlib.ticker import NullFormatter

    from descentlab.bench.figures import plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.4 * len(tasks), 4.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        mine = [r for r in rows if r["task"] == task]
        higher = mine[0]["metric_name"].endswith("accuracy")
        scale = 100.0 if higher else 1.0
        dense = next((r["metric_mean"] for r in mine if r["method"] == "dense"), math.nan)
        low, high = ((scale * dense - 3.0, 100.0) if higher
                     else (0.97 * dense, 1.10 * dense)) if math.isfinite(dense) else (None, None)
        for k, r in enumerate(sorted(mine, key=lambda r: r["sent_per_step"])):
            if not math.isfinite(r["metric_mean"]):
                continue
            y, color = scale * r["metric_mean"], "#d62728" if r["ours"] else "#1f77b4"
            label = r["method"]
            if low is not None and not low <= y <= high:
                label += f" ({y:.3g})"
                y = low if y < low else high
                ax.plot(r["sent_per_step"], y, "v" if y == low else "^", color=color, ms=8,
                        clip_on=False)
            else:
                ax.errorbar(r["sent_per_step"], y, yerr=scale * r["metric_std"],
                            fmt="o" if r["ours"] else "s", color=color, capsize=3, ms=6)
            ax.annotate(label, (r["sent_per_step"], y), textcoords="offset points",
                        xytext=(5, 6 if k % 2 else -11), fontsize=7)
        if low is not None:
            ax.axhline(scale * dense, color="#7f7f7f", ls="--", lw=1)
            ax.set_ylim(low, high)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("bytes sent per rank per step (log)")
        name = mine[0]["metric_name"]
        ax.set_ylabel(f"final {name}" + (" (%)" if higher else ""))
        ax.set_title(f"{task} ({mine[0]['steps']} steps, {mine[0]['seeds']} seed(s))")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("Bytes against final metric (squares: torch hooks, circles: descentlab; "
                 "triangles: off the axis; diverged runs not drawn; dashed: dense)")
    fig.tight_layout()
    return fig


def _html(rows: list[dict[str, Any]], goals: dict[str, Any], png: bytes,
          meta: dict[str, Any]) -> str:
    from descentlab.bench.report import _CSS, _png_tag

    tables = []
    for task in dict.fromkeys(r["task"] for r in rows):
        body = "".join(
            f"<tr><td class='l'>{html.escape(r['method'])}</td>"
            f"<td>{_bytes(r['sent_per_step'])}</td><td>{_bytes(r['received_per_step'])}</td>"
            f"<td>{r['ratio_sent']:.1f}</td><td>{html.escape(_metric(r))}</td>"
            f"<td>{r['wall_s']:.1f}</td><td>{1e3 * r['compute_s_per_step']:.2f}</td>"
            + "".join(f"<td>{r['modelled_s'][f'{b:g}']:.2f}</td>" for b in BANDWIDTHS_GBIT)
            + "</tr>" for r in rows if r["task"] == task)
        heads = "".join(f"<th>model s @ {b:g} Gbit/s</th>" for b in BANDWIDTHS_GBIT)
        tables.append(
            f"<h2>{html.escape(task)}</h2><table><tr><th class='l'>method</th>"
            f"<th>sent B/step</th><th>received B/step</th><th>× fewer sent</th>"
            f"<th>final metric</th><th>wall s</th><th>compute ms/step</th>{heads}</tr>"
            f"{body}</table>")
    goal_lines = "".join(f"<li>{html.escape(line)}</li>" for line in goals_text(goals).split("\n"))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>descentlab distributed</title>"
        f"<style>{_CSS}</style></head><body><main><h1>Gradient exchange: bytes against the "
        f"final metric</h1><p class='sub'>{html.escape(meta['description'])}</p>"
        f"<figure data-figure='bytes-vs-metric'>{_png_tag(png, 'bytes against final metric')}"
        "<figcaption>Bytes each rank sends per step (log) against the final validation "
        "metric, mean ± std over seeds.</figcaption></figure>"
        f"<h2>Goals</h2><ul>{goal_lines}</ul>{''.join(tables)}"
        f"<h2>Protocol</h2><pre>{html.escape(json.dumps(meta, indent=1))}</pre>"
        "</main></body></html>")


def write_outputs(out: Path, records: list[dict[str, Any]], rows: list[dict[str, Any]],
                  goals: dict[str, Any], meta: dict[str, Any],
                  figure_path: Path | None = None) -> dict[str, Path]:
    """Write ``summary.json``, ``table.md``, the PNG and ``report.html`` into ``out``."""
    from descentlab.bench.figures import png_bytes

    png = png_bytes(bytes_figure(rows))
    paths = {"json": out / "summary.json", "table": out / "table.md",
             "png": figure_path or out / "bytes_vs_metric.png", "html": out / "report.html"}
    paths["png"].parent.mkdir(parents=True, exist_ok=True)
    paths["png"].write_bytes(png)
    summary = {"meta": {**meta, "written": time.strftime("%Y-%m-%d %H:%M:%S")},
               "rows": rows, "goals": goals, "runs": records}
    paths["json"].write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    paths["table"].write_text(markdown_tables(rows) + "\n" + goals_text(goals) + "\n",
                              encoding="utf-8")
    paths["html"].write_text(_html(rows, goals, png, meta), encoding="utf-8")
    return paths
