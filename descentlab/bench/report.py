"""The comparison report: one self-contained HTML file (works offline) plus PNG figures.

``report.html`` embeds everything it shows: figures as base64 PNG, the
animated trajectories as inline SVG driven by a few lines of inline
JavaScript (no CDN, no external file, no network). It holds, in order: the
leaderboard, the performance profiles, the loss curves (mean ± std band),
the animated trajectories over contour plots of the 2-D functions, the
learning-rate sensitivity curves, per-problem result tables (final metrics,
time to target, memory, best setting) and the exact protocol and versions.

Every figure is a ``<figure data-figure="…">``; the list of expected figure
ids is embedded as JSON (``<script id="figure-manifest">``) so a browser test
can check each one is present and rendered. PNG copies are written to
``<out>/figures/``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from pathlib import Path
from typing import Any

from descentlab.bench import figures
from descentlab.bench.results import Results, leaderboard_text
from descentlab.bench.store import json_safe

__all__ = ["write_report", "render_html"]

SVG_W = 440

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1b1f24;
background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{margin-top:36px;border-bottom:2px solid #dde1e6;padding-bottom:4px}
.sub{color:#57606a}
table{border-collapse:collapse;background:#fff;margin:8px 0;font-size:14px}
th,td{border:1px solid #dde1e6;padding:4px 8px;text-align:right}
th{background:#eef1f4}td.l,th.l{text-align:left}
.bar{display:inline-block;height:10px;background:#4c78a8;vertical-align:middle;margin-right:6px}
figure{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px;margin:12px 0}
figure img{max-width:100%;height:auto}figcaption{color:#57606a;font-size:13px;margin-top:6px}
.grid{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.grid figure{margin:0;width:466px}
.controls{margin:6px 0;display:flex;gap:8px;align-items:center;font-size:13px}
.legend span{display:inline-block;margin-right:10px;font-size:12px}
.legend i{display:inline-block;width:12px;height:3px;margin-right:4px;vertical-align:middle}
code,pre{background:#eef1f4;border-radius:4px;padding:1px 4px}pre{padding:8px;overflow:auto}
"""

_JS = """
'use strict';
(function () {
  document.querySelectorAll('figure[data-anim]').forEach(function (fig) {
    var data = JSON.parse(fig.querySelector('script.anim-data').textContent);
    var lines = fig.querySelectorAll('polyline');
    var heads = fig.querySelectorAll('circle.head');
    var slider = fig.querySelector('input[type=range]');
    var button = fig.querySelector('button');
    var label = fig.querySelector('.frame');
    var frames = data.frames, timer = null;
    slider.max = String(frames - 1);
    function draw(k) {
      data.paths.forEach(function (path, i) {
        var n = Math.min(path.length, k + 1);
        var pts = path.slice(0, n);
        var text = pts.map(function (p) { return p[0] + ',' + p[1]; }).join(' ');
        lines[i].setAttribute('points', text);
        var last = pts[pts.length - 1];
        heads[i].setAttribute('cx', last[0]);
        heads[i].setAttribute('cy', last[1]);
      });
      slider.value = String(k);
      label.textContent = 'frame ' + (k + 1) + ' / ' + frames;
    }
    function stop() {
      if (timer) { clearInterval(timer); timer = null; }
      button.textContent = 'play';
    }
    function play() {
      var k = Number(slider.value);
      if (k >= frames - 1) { k = 0; }
      button.textContent = 'pause';
      timer = setInterval(function () {
        draw(k);
        k += 1;
        if (k >= frames) { stop(); }
      }, 40);
    }
    button.addEventListener('click', function () { if (timer) { stop(); } else { play(); } });
    slider.addEventListener('input', function () { stop(); draw(Number(slider.value)); });
    draw(frames - 1);
    fig.setAttribute('data-ready', '1');
    play();
  });
})();
"""


def _png_tag(data: bytes, alt: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{b64}" alt="{html.escape(alt)}">'


def _figure(fig_id: str, body: str, caption: str) -> str:
    return (
        f'<figure data-figure="{fig_id}" id="fig-{fig_id}">{body}'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}g}"


def _leaderboard(results: Results) -> str:
    names = [p.name for p in results.problems]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for row in results.leaderboard:
        width = int(120 * row["score"])
        cells = "".join(f"<td>{'—' if row[n] is None else row[n]}</td>" for n in names)
        rows.append(
            f"<tr><td>{row['rank']}</td><td class=l><b>{html.escape(row['optimizer'])}</b></td>"
            f"<td class=l><span class=bar style='width:{width}px'></span>{row['score']:.3f}</td>"
            f"<td>{row['time_score']:.3f}</td>"
            f"<td>{row['solved']}/{len(names)}</td>{cells}</tr>"
        )
    return (
        "<table id=leaderboard><thead><tr><th>rank</th><th class=l>optimizer</th>"
        f"<th class=l>score</th><th>time score</th><th>solved</th>{head}</tr></thead><tbody>"
        f"{''.join(rows)}</tbody></table><p class=sub>Per problem: median steps to reach the "
        "target over the re-run seeds (— = not reached by at least half the seeds). Score: "
        "AlgoPerf area under the performance profile of steps to target for τ ∈ [1, 4], "
        "divided by 3 (the ranking; exactly reproducible). Time score: the same on the median "
        "training wall time to target, which charges costly steps (full batch, several "
        "closure calls) for their cost; it depends on this machine and its load.</p>"
    )


def _svg_height(bounds: Any) -> int:
    """Height that keeps the function's aspect ratio (within 220–520 px)."""
    (x0, x1), (y0, y1) = bounds
    return int(min(max(SVG_W * (y1 - y0) / (x1 - x0), 220), 520))


def _to_px(point: list[float | None], bounds: Any) -> list[float] | None:
    (x0, x1), (y0, y1) = bounds
    SVG_H = _svg_height(bounds)
    if point is None or any(v is None or not math.isfinite(v) for v in point):
        return None
    px = (point[0] - x0) / (x1 - x0) * SVG_W
    py = (1.0 - (point[1] - y0) / (y1 - y0)) * SVG_H
    clip = 4.0 * max(SVG_W, SVG_H)  # keep far-away points finite but off-canvas
    return [round(min(max(px, -clip), clip), 2), round(min(max(py, -clip), clip), 2)]


def _animated_trajectories(results: Results, problem: Any, fn: Any) -> str:
    names = [e.name for e in results.entrants]
    col = figures.colors(names)
    paths, shown = [], []
    for name in names:
        runs = results.units[(problem.name, name)].runs
        traj = next((r.trajectory for r in runs if r.trajectory), None)
        if not traj:
            continue
        px = []
        for pt in traj:
            q = _to_px(pt, fn.bounds)
            if q is None:
                break
            px.append(q)
        if px:
            paths.append(px)
            shown.append(name)
    if not paths:
        return ""
    frames = max(len(p) for p in paths)
    SVG_H = _svg_height(fn.bounds)
    b64 = base64.b64encode(figures.contour_image(fn, SVG_W, SVG_H)).decode("ascii")
    shapes = "".join(
        f'<polyline fill="none" stroke="{col[n]}" stroke-width="2" points="{p[0][0]},{p[0][1]}"/>'
        for n, p in zip(shown, paths, strict=True)
    ) + "".join(
        f'<circle class="head" r="4" fill="{col[n]}" stroke="#000" cx="{p[0][0]}" cy="{p[0][1]}"/>'
        for n, p in zip(shown, paths, strict=True)
    )
    legend = "".join(
        f'<span><i style="background:{col[n]}"></i>{html.escape(n)}</span>' for n in shown
    )
    data = json.dumps({"frames": frames, "paths": paths})
    body = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_W}" height="{SVG_H}" '
        f'viewBox="0 0 {SVG_W} {SVG_H}" style="overflow:hidden">'
        f'<image href="data:image/png;base64,{b64}" x="0" y="0" width="{SVG_W}" '
        f'height="{SVG_H}"/>{shapes}</svg>'
        f"<div class=controls><button type=button>play</button>"
        f"<input type=range min=0 max={frames - 1} value={frames - 1}>"
        f"<span class=frame></span></div><div class=legend>{legend}</div>"
        f'<script type="application/json" class="anim-data">{data}</script>'
    )
    fig_id = f"trajectory-{problem.name}"
    caption = (
        f"{problem.name}: f(x, y) = {fn.formula}. Each optimizer's path with its tuned "
        "setting (first re-run seed); ★ = minima. Use the slider or play."
    )
    return (
        f'<figure data-figure="{fig_id}" data-anim="1" id="fig-{fig_id}">{body}'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _problem_tables(results: Results) -> str:
    parts = []
    for p in results.problems:
        keys: list[str] = []
        for e in results.entrants:
            keys += [k for k in results.units[(p.name, e.name)].final if k not in keys]
        head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
        rows = []
        for e in results.entrants:
            u = results.units[(p.name, e.name)]
            finals = "".join(
                f"<td>{_fmt(u.final[k][0])} ± {_fmt(u.final[k][1], 2)}</td>"
                if k in u.final
                else "<td>—</td>"
                for k in keys
            )
            hp = ", ".join(f"{k}={v:.3g}" for k, v in u.hparams.items())
            rows.append(
                f"<tr><td class=l>{html.escape(e.name)}</td>{finals}"
                f"<td>{_fmt(u.steps_to_target)}</td><td>{_fmt(u.time_to_target, 3)}</td>"
                f"<td>{u.reached}/{len(u.runs)}</td><td>{u.diverged}</td>"
                f"<td>{_fmt(u.state_bytes)}</td><td>{_fmt(u.peak_bytes)}</td>"
                f"<td class=l>{html.escape(hp)}</td></tr>"
            )
        target = f"{p.metric} {'≥' if p.higher_is_better else '≤'} {p.target:g}"
        parts.append(
            f"<h3>{html.escape(p.name)} <span class=sub>(target {html.escape(target)}, "
            f"{p.steps} steps)</span></h3><table><thead><tr><th class=l>optimizer</th>{head}"
            "<th>steps to target</th><th>train s to target</th><th>seeds reached</th>"
            "<th>diverged</th><th>optimizer state B</th><th>peak step B</th>"
            f"<th class=l>best setting</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    return "".join(parts) + (
        "<p class=sub>Final metrics: mean ± sample std over the re-run seeds that did not "
        "diverge. Steps/time to target: median over seeds. Optimizer state: bytes of tensors in "
        "<code>optimizer.state</code>. Peak step memory: peak of torch allocations over three "
        "training steps, measured with <code>torch.profiler</code> (profile_memory).</p>"
    )


def _protocol(results: Results, meta: dict[str, Any]) -> str:
    pr = results.protocol
    rows = [
        (
            "tuning",
            f"Optuna TPE sampler, {pr.trials} trials per (problem, optimizer), "
            f"{pr.startup_trials} random start-up trials; trial n seeded by a hash of the "
            "study key and n; objective: the problem's target metric at the end of the "
            "budget (diverged = worst)",
        ),
        (
            "pruning",
            "median pruner after start-up trials and the first quarter of the budget"
            if pr.prune
            else "off",
        ),
        (
            "re-runs",
            f"best setting re-run on seeds {', '.join(map(str, pr.run_seeds))}; tuning "
            f"on seed {pr.seed}",
        ),
        (
            "score",
            "AlgoPerf: area under the performance profile on steps to target, τ ∈ [1, 4], "
            "÷ 3; a problem not reached by the median seed earns no credit",
        ),
        (
            "time",
            "ranked in optimizer steps, which is exactly reproducible; one gd step is a "
            "full-batch step, one step of the others a mini-batch step of the problem's batch "
            "size. The time score uses training wall time to target instead (AlgoPerf's "
            "measure, there on fixed hardware): it depends on this machine, its load and the "
            "number of workers",
        ),
        ("command", str(meta.get("command") or "(Python API)")),
        ("workers", str(meta.get("workers", "?"))),
        ("storage", str(meta.get("storage", "?"))),
    ]
    proto = "".join(
        f"<tr><td class=l>{k}</td><td class=l>{html.escape(v)}</td></tr>" for k, v in rows
    )
    probs = "".join(
        f"<tr><td class=l>{html.escape(p.name)}</td><td>{p.version}</td><td class=l><code>"
        f"{p.fingerprint()}</code></td><td class=l>{html.escape(p.description)}</td>"
        f"<td>{p.steps}</td><td>{p.batch_size or 'full'}</td><td class=l>{html.escape(p.metric)} "
        f"{'≥' if p.higher_is_better else '≤'} {p.target:g}</td></tr>"
        for p in results.problems
    )
    ents = "".join(
        f"<tr><td class=l>{html.escape(e.name)}</td><td class=l>{html.escape(e.optimizer)}</td>"
        f"<td class=l>{html.escape(e.describe_space())}</td>"
        f"<td class=l>{html.escape(e.description)}</td></tr>"
        for e in results.entrants
    )
    vers = "".join(
        f"<tr><td class=l>{html.escape(k)}</td><td class=l>{html.escape(str(v))}</td></tr>"
        for k, v in meta.get("versions", {}).items()
    )
    return (
        f"<table>{proto}</table><h3>Problems</h3><table><tr><th class=l>problem</th><th>version"
        "</th><th class=l>fingerprint</th><th class=l>description</th><th>steps</th><th>batch</th>"
        f"<th class=l>target</th></tr>{probs}</table><h3>Search spaces</h3><table><tr>"
        "<th class=l>optimizer</th><th class=l>implementation</th><th class=l>search space</th>"
        f"<th class=l>description</th></tr>{ents}</table><h3>Versions</h3><table>{vers}</table>"
    )


def render_html(results: Results, pngs: dict[str, bytes], meta: dict[str, Any]) -> str:
    """The report as one HTML string (see the module docstring)."""
    manifest = ["performance-profile", "loss-curves", "lr-sensitivity"]
    traj_html = []
    for p in results.problems:
        fn = figures.function_of(p)
        if fn is not None:
            block = _animated_trajectories(results, p, fn)
            if block:
                traj_html.append(block)
                manifest.append(f"trajectory-{p.name}")
    wall = meta.get("wall_time_s")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    sections = [
        f"<h1>descentlab compare</h1><p class=sub>{len(results.entrants)} optimizers × "
        f"{len(results.problems)} problems · {results.protocol.trials} tuning trials and "
        f"{results.protocol.seeds} seeds each · generated {stamp}"
        + (f" · wall time {wall:.1f} s" if isinstance(wall, (int, float)) else "")
        + "</p>",
        "<h2>Leaderboard</h2>",
        _leaderboard(results),
        "<h2>Performance profile</h2>",
        _figure(
            "performance-profile",
            _png_tag(pngs["performance_profile"], "performance profile"),
            "ρ(τ): share of problems an optimizer solves within τ times the best steps to "
            "target (left) or the best training wall time to target (right, "
            "machine-dependent). The scores are the areas under ρ on [1, 4] divided by 3.",
        ),
        "<h2>Loss curves</h2>",
        _figure(
            "loss-curves",
            _png_tag(pngs["loss_curves"], "loss curves"),
            "Target metric every evaluation: mean ± one standard deviation over seeds.",
        ),
    ]
    if traj_html:
        sections += [
            "<h2>Trajectories on the 2-D functions</h2>",
            f"<div class=grid>{''.join(traj_html)}</div>",
        ]
    sections += [
        "<h2>Learning-rate sensitivity</h2>",
        _figure(
            "lr-sensitivity",
            _png_tag(pngs["lr_sensitivity"], "learning-rate sensitivity"),
            "Every tuning trial: final target metric against the learning rate. A flat, "
            "wide valley means the optimizer is easy to tune.",
        ),
        "<h2>Results per problem</h2>",
        _problem_tables(results),
        "<h2>Protocol and versions</h2>",
        _protocol(results, meta),
        "<h2>Leaderboard (Markdown)</h2>",
        f"<pre>{html.escape(leaderboard_text(results))}</pre>",
    ]
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>descentlab compare report</title><style>{_CSS}</style></head><body><main>"
        + "".join(sections)
        + f'<script type="application/json" id="figure-manifest">{json.dumps(manifest)}</script>'
        + f"<script>{_JS}</script></main></body></html>"
    )


def write_report(
    results: Results, out: Path, meta: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write ``report.html`` and ``figures/*.png`` into ``out``; return their paths."""
    meta = json_safe(meta or {})
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    pngs = {
        "performance_profile": figures.png_bytes(figures.profile_figure(results)),
        "loss_curves": figures.png_bytes(figures.curves_figure(results)),
        "lr_sensitivity": figures.png_bytes(figures.sensitivity_figure(results)),
    }
    for p in results.problems:
        has_paths = any(
            r.trajectory for e in results.entrants for r in results.units[(p.name, e.name)].runs
        )
        if figures.function_of(p) is not None and has_paths:
            pngs[f"trajectories_{p.name}"] = figures.png_bytes(
                figures.trajectories_figure(results, p)
            )
    paths: dict[str, Path] = {}
    for name, data in pngs.items():
        path = figdir / f"{name}.png"
        path.write_bytes(data)
        paths[f"figures/{name}.png"] = path
    report = out / "report.html"
    tmp = out / "report.html.tmp"
    tmp.write_text(render_html(results, pngs, meta), encoding="utf-8")
    tmp.replace(report)
    paths["report.html"] = report
    return paths
