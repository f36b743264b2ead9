"""Summaries of a monitor's findings: plain text, rich terminal, self-contained HTML.

The HTML page embeds its plots as inline SVG (matplotlib), so it is one
file with no external resources: loss and validation curves with the steps
of each finding marked, a heat map of every layer's relative gradient
``‖g‖/‖θ‖`` over the checks, and the latest update-to-parameter ratios and
effective learning rates.
"""

from __future__ import annotations

import html
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from descentlab.diagnostics.findings import Finding, Severity

if TYPE_CHECKING:
    from descentlab.diagnostics.monitor import TrainingMonitor

__all__ = ["html_report", "print_summary", "text_summary", "write_html"]

_COLOURS = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
_HEX = {Severity.ERROR: "#c62828", Severity.WARNING: "#ef6c00", Severity.INFO: "#1565c0"}


# The per-layer table: ``monitor.layer_table()`` key and column heading.
_LAYER_COLUMNS = (
    ("layer", "layer"),
    ("param_norm", "‖θ‖"),
    ("grad_norm", "‖g‖"),
    ("relative_gradient", "‖g‖/‖θ‖"),
    ("update_ratio", "‖Δθ‖/‖θ‖"),
    ("effective_lr", "effective lr"),
)


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (-f.severity.rank, f.step))


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "–" if not math.isfinite(x) else f"{x:.3g}"
    return str(x)


def text_summary(monitor: TrainingMonitor) -> str:
    """Findings (worst first) and the latest per-layer table as plain text."""
    lines = [f"descentlab diagnosis after {monitor.step} steps"]
    h = monitor.history
    if h.losses:
        lines.append(f"loss: first {_fmt(h.losses[0])}, last {_fmt(h.losses[-1])}")
    if not monitor.findings:
        lines.append("no problems found")
    for f in _sorted(monitor.findings):
        seen = monitor.counts.get(f.kind, 1)
        lines.append(f"{f}  (seen {seen}x)")
        lines.append(f"    remedy: {f.remedy}")
    rows = monitor.layer_table()
    if rows:
        lines.append("  ".join(title for _, title in _LAYER_COLUMNS))
        for r in rows:
            lines.append("  ".join(_fmt(r[k]) for k, _ in _LAYER_COLUMNS))
    return "\n".join(lines)


def print_summary(monitor: TrainingMonitor, console: Any = None, max_layers: int = 40) -> None:
    """Print the findings and the latest layer table with rich (coloured by severity)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    console.rule(f"descentlab diagnosis after {monitor.step} steps")
    if not monitor.findings:
        console.print("[green]no problems found[/green]")
    else:
        t = Table(show_lines=True)
        for col in ("severity", "finding", "step", "what", "remedy"):
            t.add_column(col, overflow="fold")
        for f in _sorted(monitor.findings):
            c = _COLOURS[f.severity]
            t.add_row(
                f"[{c}]{f.severity.value}[/{c}]", f.kind.value, str(f.step), f.message, f.remedy
            )
        console.print(t)
    rows = monitor.layer_table()
    if rows:
        t = Table(title=f"layers at the last check (step {monitor.history.checks[-1].step})")
        for col in ("layer", "‖θ‖", "‖g‖", "‖g‖/‖θ‖", "‖Δθ‖/‖θ‖", "effective lr"):
            t.add_column(col, justify="right")
        keys = [
            "layer",
            "param_norm",
            "grad_norm",
            "relative_gradient",
            "update_ratio",
            "effective_lr",
        ]
        shown = (
            rows if len(rows) <= max_layers else rows[: max_layers // 2] + rows[-max_layers // 2 :]
        )
        for r in shown:
            t.add_row(*(_fmt(r[k]) for k in keys))
        console.print(t)


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _plots(monitor: TrainingMonitor) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    out = []
    h = monitor.history
    if h.losses:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ys = np.array([v if math.isfinite(v) else np.nan for v in h.losses])
        ax.plot(h.steps, ys, lw=1, label="training loss")
        if h.val_losses:
            ax.plot(h.val_steps, h.val_losses, "o-", ms=3, label="validation loss")
        if np.nanmin(ys, initial=np.inf) > 0:
            ax.set_yscale("log")
        for f in monitor.findings:
            if f.step >= 0:
                ax.axvline(f.step, color=_HEX[f.severity], ls="--", lw=0.8)
                ax.text(f.step, ax.get_ylim()[1], f.kind.value, rotation=90, va="top", fontsize=7)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        out.append(("Loss", _svg(fig)))
    if h.checks:
        names = list(h.checks[-1].layers)
        grid = np.full((len(names), len(h.checks)), np.nan)
        for j, c in enumerate(h.checks):
            for i, n in enumerate(names):
                if n in c.layers:
                    r = c.layers[n].relative_gradient
                    grid[i, j] = math.log10(r) if math.isfinite(r) and r > 0 else -12
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.16 * len(names)))
        im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest", vmin=-12)
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set_xticks(range(len(h.checks)), [str(c.step) for c in h.checks], fontsize=6)
        ax.set_xlabel("step")
        fig.colorbar(im, ax=ax, label="log10 ‖g‖/‖θ‖")
        out.append(("Relative gradient per layer", _svg(fig)))
        rows = monitor.layer_table()
        fig, ax = plt.subplots(figsize=(7, 3))
        x = np.arange(len(rows))
        for key, label in [
            ("relative_gradient", "‖g‖/‖θ‖"),
            ("update_ratio", "‖Δθ‖/‖θ‖"),
            ("effective_lr", "effective lr"),
        ]:
            vals = np.array([r[key] for r in rows], dtype=float)
            vals[~(vals > 0)] = np.nan
            ax.semilogy(x, vals, "o-", ms=3, label=label)
        ax.set_xticks(x, [str(r["layer"]) for r in rows], rotation=90, fontsize=6)
        ax.legend(fontsize=8)
        ax.set_title(f"layers at step {h.checks[-1].step}", fontsize=9)
        out.append(("Latest check", _svg(fig)))
    return out


_CSS = """
body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}
th{background:#f3f3f3}.sev{font-weight:bold;color:#fff;border-radius:3px;padding:0 .4em}
details{margin:.5em 0}code{font-size:.85em}
"""


def html_report(monitor: TrainingMonitor, title: str = "descentlab diagnosis") -> str:
    """The self-contained HTML page as a string (inline CSS and SVG, no scripts)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1><p>{monitor.step} optimizer steps, measured every "
        f"{monitor.interval} steps.</p>",
        "<h2>Findings</h2>",
    ]
    if not monitor.findings:
        parts.append("<p id='no-findings'>No problems found.</p>")
    else:
        parts.append(
            "<table id='findings'><tr><th>severity</th><th>finding</th><th>step</th>"
            "<th>what</th><th>remedy</th></tr>"
        )
        for f in _sorted(monitor.findings):
            ev = "".join(
                f"<li><code>{e(k)}</code>: {e(_fmt(v))}</li>" for k, v in f.evidence.items()
            )
            parts.append(
                f"<tr class='finding' data-kind='{e(f.kind.value)}'>"
                f"<td><span class='sev' style='background:{_HEX[f.severity]}'>"
                f"{e(f.severity.value)}</span></td><td>{e(f.kind.value)}</td><td>{f.step}</td>"
                f"<td>{e(f.message)}<details><summary>evidence</summary><ul>{ev}</ul></details>"
                f"</td><td>{e(f.remedy)}</td></tr>"
            )
        parts.append("</table>")
    for heading, svg in _plots(monitor):
        parts.append(f"<h2>{e(heading)}</h2><figure>{svg}</figure>")
    rows = monitor.layer_table()
    if rows:
        heads = "".join(f"<th>{title}</th>" for _, title in _LAYER_COLUMNS)
        parts.append(f"<h2>Layers</h2><table id='layers'><tr>{heads}</tr>")
        for r in rows:
            cells = "".join(f"<td>{e(_fmt(r[k]))}</td>" for k, _ in _LAYER_COLUMNS)
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(
    monitor: TrainingMonitor, path: str | Path, title: str = "descentlab diagnosis"
) -> Path:
    """Write :func:`html_report` to ``path`` (parent folders created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_report(monitor, title), encoding="utf-8")
    return path
