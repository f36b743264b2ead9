"""Matplotlib figures of a comparison (written as PNG files and embedded in the report).

- :func:`profile_figure`: performance profiles ρ(τ) (steps to target);
- :func:`curves_figure`: the target metric against steps, mean ± one standard
  deviation band over seeds, with the target as a dashed line;
- :func:`sensitivity_figure`: the tuning trials' final metric against the
  learning rate (pruned trials hollow, diverged trials drawn at the top edge);
- :func:`trajectories_figure`: each entrant's path (first seed, tuned setting)
  over the contours of a 2-D test function;
- :func:`contour_image`: a bare contour image whose pixels map linearly to the
  function's bounds (the animated SVG in the report draws on it).
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from descentlab.bench.results import Results  # noqa: E402
from descentlab.bench.scoring import TAU_MAX, performance_profile  # noqa: E402
from descentlab.problems.analytic import FUNCTIONS  # noqa: E402
from descentlab.problems.visualize import contour_grid, mark_minima  # noqa: E402

__all__ = [
    "colors",
    "profile_figure",
    "curves_figure",
    "sensitivity_figure",
    "trajectories_figure",
    "contour_image",
    "function_of",
    "png_bytes",
]


LOG_FLOOR = 1e-16


def colors(names: list[str]) -> dict[str, str]:
    """A fixed colour per entrant (matplotlib's tab10, then tab20)."""
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: matplotlib.colors.to_hex(cmap(i % cmap.N)) for i, n in enumerate(names)}


def png_bytes(fig: Any, dpi: int = 110) -> bytes:
    """Render a figure to PNG bytes and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _grid(n: int) -> tuple[Any, np.ndarray]:
    cols = min(3, max(1, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def _finish_grid(fig: Any, axes: np.ndarray, title: str) -> Any:
    """One legend (the first panel's entries) below a grid of panels, the title above."""
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(len(labels), 9),
        fontsize=8,
        bbox_to_anchor=(0.5, -0.04),
    )
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def profile_figure(results: Results) -> Any:
    """Performance profiles ρ(τ) for τ in [1, τ_max] on steps (left) and on training wall
    time (right) to target; score = area / (τ_max − 1)."""
    names = [e.name for e in results.entrants]
    col = colors(names)
    taus = np.linspace(1.0, TAU_MAX, 601)
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.0), sharey=True)
    panels = (
        (results.ratios, results.scores, "steps"),
        (results.time_ratios, results.time_scores, "training wall time"),
    )
    for ax, (ratios, scores, measure) in zip(axes, panels, strict=True):
        rho = performance_profile(ratios, taus)
        for i, name in enumerate(names):
            offset = (i - len(names) / 2) * 0.003  # separate identical curves slightly
            ax.step(taus, rho[name] + offset, where="post", color=col[name], lw=1.8,
                    label=f"{name} ({scores[name]:.3f})")
        ax.set_xlim(1.0, TAU_MAX)
        ax.set_ylim(-0.03, 1.05)
        ax.set_xlabel(f"τ ({measure} to target ÷ best on that problem)")
        ax.set_title(f"on {measure} (legend: score)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    axes[0].set_ylabel("ρ(τ): share of problems solved within τ")
    fig.suptitle("Performance profiles")
    fig.tight_layout()
    return fig


def curves_figure(results: Results) -> Any:
    """Target metric per evaluation step, mean ± std band over seeds, one panel per problem.

    Losses with a positive target are drawn on a log axis, with values below
    ``1e-16`` drawn at ``1e-16``; the band never reaches below the best seed
    (on a log axis ``mean − std`` is often negative).
    """
    names = [e.name for e in results.entrants]
    col = colors(names)
    fig, axes = _grid(len(results.problems))
    for ax, p in zip(axes, results.problems, strict=False):
        log_y = not p.higher_is_better and p.target > 0
        for name in names:
            runs = results.units[(p.name, name)].runs
            curves = [r.curve for r in runs if r.curve]
            if not curves:
                continue
            steps = sorted({c["step"] for curve in curves for c in curve})
            index = {s: i for i, s in enumerate(steps)}
            mat = np.full((len(curves), len(steps)), np.nan)
            for k, curve in enumerate(curves):
                for c in curve:
                    v = c.get(p.metric)
                    mat[k, index[c["step"]]] = np.nan if v is None else v
            mat[~np.isfinite(mat)] = np.nan
            if log_y:
                mat = np.maximum(mat, LOG_FLOOR)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(mat, axis=0)
                std = np.nanstd(mat, axis=0, ddof=1) if len(curves) > 1 else np.zeros(len(steps))
                low = np.fmax(mean - np.nan_to_num(std), np.nanmin(mat, axis=0))
            high = mean + np.nan_to_num(std)
            ax.plot(steps, mean, color=col[name], lw=1.5, label=name)
            ax.fill_between(steps, low, high, color=col[name], alpha=0.18, lw=0)
        ax.axhline(p.target, color="k", ls="--", lw=1, label="target")
        if log_y:
            ax.set_yscale("log")
        ax.set_title(f"{p.name} — {p.metric}", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return _finish_grid(
        fig, axes, "Target metric during training: mean ± 1 std over seeds (tuned setting)"
    )


def sensitivity_figure(results: Results) -> Any:
    """Final metric of every tuning trial against its learning rate, one panel per problem.

    Pruned trials show their last reported value. Diverged trials, and losses
    more than 1000 × the median trial's, are drawn as × on the top edge.
    """
    names = [e.name for e in results.entrants]
    col = colors(names)
    fig, axes = _grid(len(results.problems))
    for ax, p in zip(axes, results.problems, strict=False):
        finite_vals = [
            t["value"]
            for n in names
            for t in results.units[(p.name, n)].trials
            if t["value"] is not None and math.isfinite(t["value"])
        ]
        log_y = not p.higher_is_better and p.target > 0
        if not finite_vals:
            edge = 1.0
        elif p.higher_is_better:
            edge = min(finite_vals)
        else:  # draw values far above the typical trial (and diverged ones) at the top edge
            edge = min(max(finite_vals), 1e3 * max(float(np.median(finite_vals)), LOG_FLOOR))
        for name in names:
            rows = [t for t in results.units[(p.name, name)].trials if "lr" in t["params"]]
            rows.sort(key=lambda t: t["params"]["lr"])
            if not rows:
                continue
            lr, val, kinds = [], [], []
            for t in rows:
                v = t["value"]
                off = t["diverged"] or v is None or not math.isfinite(v)
                if not off and not p.higher_is_better and v > edge:
                    off = True
                y = edge if off else (max(v, LOG_FLOOR) if log_y else v)
                lr.append(t["params"]["lr"])
                val.append(y)
                kinds.append("off" if off else t["state"])
            ax.plot(lr, val, color=col[name], lw=0.8, alpha=0.6)
            for x, y, kind in zip(lr, val, kinds, strict=True):
                if kind == "off":
                    ax.scatter([x], [y], s=22, marker="x", color=col[name])
                elif kind == "pruned":
                    ax.scatter([x], [y], s=22, facecolors="none", edgecolors=col[name])
                else:
                    ax.scatter([x], [y], s=22, color=col[name])
            ax.plot([], [], color=col[name], marker="o", lw=0.8, label=name)
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.axhline(p.target, color="k", ls="--", lw=1)
        ax.set_title(f"{p.name} — final {p.metric}", fontsize=10)
        ax.set_xlabel("learning rate")
        ax.grid(alpha=0.3)
    return _finish_grid(
        fig,
        axes,
        "Learning-rate sensitivity: every tuning trial "
        "(hollow = pruned, × = diverged or off the scale)",
    )


def function_of(problem: Any) -> Any:
    """The 2-D test function of an analytic problem, or ``None``."""
    name = dict(getattr(problem, "config", ()) or ()).get("function")
    return FUNCTIONS.get(name) if isinstance(name, str) else None


def _draw_contours(ax: Any, fn: Any) -> None:
    gx, gy, z, _ = contour_grid(fn, 300)
    ax.contourf(gx, gy, z, levels=40, cmap="viridis", alpha=0.85)
    ax.contour(gx, gy, z, levels=20, colors="white", linewidths=0.4, alpha=0.5)
    mark_minima(ax, fn, markersize=12)


def contour_image(fn: Any, width: int = 480, height: int = 400) -> bytes:
    """PNG of the contours alone, filling the image exactly (pixel ↔ bounds is linear)."""
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    _draw_contours(ax, fn)
    (x0, x1), (y0, y1) = fn.bounds
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def trajectories_figure(results: Results, problem: Any) -> Any:
    """Paths of every entrant (tuned setting, first seed) over the function's contours."""
    fn = function_of(problem)
    names = [e.name for e in results.entrants]
    col = colors(names)
    fig, ax = plt.subplots(figsize=(6.0, 5.0))
    _draw_contours(ax, fn)
    for name in names:
        runs = results.units[(problem.name, name)].runs
        traj = next((r.trajectory for r in runs if r.trajectory), None)
        if not traj:
            continue
        arr = np.array([[np.nan if v is None else v for v in pt] for pt in traj], dtype=float)
        ax.plot(arr[:, 0], arr[:, 1], "-o", color=col[name], ms=2, lw=1.3, label=name)
    (x0, x1), (y0, y1) = fn.bounds
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_title(f"{problem.name}: {fn.formula}", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    return fig
