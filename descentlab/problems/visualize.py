"""Pictures of optimizer trajectories over a 2-D test function.

* :func:`plot_trajectories` — a still figure (save it as PNG with ``fig.savefig``);
* :func:`animation_gif` / :func:`animate_trajectories` (``.gif``) — an animated
  GIF in which the paths grow step by step;
* :func:`animation_html` / :func:`animate_trajectories` (``.html``) — the same
  animation as self-contained HTML: the figure without paths as an inline PNG,
  the paths as SVG polylines on top, a play button and a step slider driven by a
  few lines of inline JavaScript. No CDN, works offline, a few hundred kB.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas
directly (no pyplot state), so they work under any backend and in worker
processes. Animation frames are drawn by blitting: the contours are rendered
once and only the paths are redrawn per frame (Agg ``copy_from_bbox`` /
``restore_region``), then Pillow writes the GIF with one shared palette.
Contours of steep functions (``Function2D.log_scale``) show
``log10(f − f_min + 10⁻³)``.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from descentlab.problems.analytic import Function2D, get_function

__all__ = [
    "animate_trajectories",
    "animation_gif",
    "animation_html",
    "contour_grid",
    "draw_contours",
    "mark_minima",
    "optimizer_colors",
    "plot_trajectories",
]

Trajectories = Mapping[str, np.ndarray]


def optimizer_colors(names: Sequence[str]) -> dict[str, str]:
    """A fixed colour per name, in order, from matplotlib's ``tab10`` palette, as ``#rrggbb``."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = [to_hex(c) for c in colormaps["tab10"].colors]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def _function(function: str | Function2D) -> Function2D:
    return function if isinstance(function, Function2D) else get_function(function)


def contour_grid(
    function: str | Function2D, resolution: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """``function`` on a ``resolution`` × ``resolution`` grid over its ``bounds``.

    Returns ``(x, y, z, label)``: the grid coordinates (``meshgrid``,
    ``indexing="ij"`` over ``y`` then ``x``), the values to colour and their
    label. For steep functions (``Function2D.log_scale``) ``z`` is
    ``log10(f − min f + 10⁻³)``.
    """
    fn = _function(function)
    (x0, x1), (y0, y1) = fn.bounds
    xs = torch.linspace(x0, x1, resolution, dtype=torch.float64)
    ys = torch.linspace(y0, y1, resolution, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    with torch.no_grad():
        z = fn.f(gx, gy).numpy()
    if fn.log_scale:
        return gx.numpy(), gy.numpy(), np.log10(z - np.nanmin(z) + 1e-3), "log₁₀(f − min + 10⁻³)"
    return gx.numpy(), gy.numpy(), z, "f"


def mark_minima(ax: Axes, function: str | Function2D, markersize: float = 13) -> None:
    """The function's global minima as gold stars (above the contours and paths)."""
    for mx, my in _function(function).minima:
        ax.plot(mx, my, marker="*", color="gold", markersize=markersize,
                markeredgecolor="black", linestyle="none", zorder=5)


def draw_contours(
    ax: Axes, function: str | Function2D, resolution: int = 200, colorbar: bool = True
) -> None:
    """``function`` over its ``bounds`` (colour map and contour lines), minima as gold stars.

    The colours are an image (``imshow``), which renders far faster than
    ``contourf`` polygons when an animation redraws every frame.
    """
    fn = _function(function)
    (x0, x1), (y0, y1) = fn.bounds
    gx, gy, z, label = contour_grid(fn, resolution)
    image = ax.imshow(z, origin="lower", extent=(x0, x1, y0, y1), aspect="auto",
                      cmap="viridis", interpolation="bilinear")
    ax.contour(gx, gy, z, levels=15, colors="white", linewidths=0.5, alpha=0.6)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=label, shrink=0.85)
    mark_minima(ax, fn)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def _check(trajectories: Trajectories) -> dict[str, np.ndarray]:
    if not trajectories:
        raise ValueError("trajectories must name at least one optimizer")
    out = {}
    for name, path in trajectories.items():
        arr = np.asarray(path, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0:
            raise ValueError(f"trajectory {name!r} must have shape (steps + 1, 2), "
                             f"got {arr.shape}")
        out[name] = arr
    return out


def _title(fn: Function2D, title: str | None) -> str:
    return title if title is not None else f"{fn.name}: f(x, y) = {fn.formula}"


def plot_trajectories(
    function: str | Function2D,
    trajectories: Trajectories,
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 5.6),
) -> Figure:
    """Still figure: every path (line with small dots) over the contours.

    Args:
        function: a function name or :class:`Function2D`.
        trajectories: optimizer label -> array ``(steps + 1, 2)`` (``nan`` rows,
            e.g. after divergence, are left out).
        title: figure title; defaults to the function's name and formula.
    """
    fn = _function(function)
    paths = _check(trajectories)
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    draw_contours(ax, fn)
    colors = optimizer_colors(list(paths))
    for name, path in paths.items():
        ax.plot(path[:, 0], path[:, 1], "-o", color=colors[name], lw=1.4, ms=2.2, label=name)
        ax.plot(*path[0], "o", color="white", markeredgecolor="black", ms=6, zorder=6)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
    ax.set_title(_title(fn, title), fontsize=10)
    return fig


def _frame_steps(length: int, frames: int) -> list[int]:
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be an int >= 2, got {frames!r}")
    return sorted({int(round(v)) for v in np.linspace(0, length - 1, min(frames, length))})


class _Scene:
    """The figure without paths, plus empty path artists to blit frame by frame."""

    def __init__(self, function: str | Function2D, trajectories: Trajectories,
                 title: str | None, figsize: tuple[float, float], dpi: int) -> None:
        self.fn = _function(function)
        self.paths = _check(trajectories)
        self.colors = optimizer_colors(list(self.paths))
        self.fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
        self.canvas = FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_subplot()
        draw_contours(self.ax, self.fn, resolution=150)
        self.lines, self.heads = {}, {}
        for name in self.paths:
            (self.lines[name],) = self.ax.plot([], [], "-", color=self.colors[name], lw=1.6,
                                               label=name, animated=True)
            (self.heads[name],) = self.ax.plot([], [], "o", color=self.colors[name], ms=7,
                                               markeredgecolor="black", zorder=6,
                                               animated=True)
        self.counter = self.ax.text(0.02, 0.03, "", transform=self.ax.transAxes, color="white",
                                    fontsize=9, animated=True)
        self.ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
        self.ax.set_title(_title(self.fn, title), fontsize=10)
        self.canvas.draw()  # lays out once; the layout is frozen from here on
        self.fig.set_layout_engine("none")
        self.background = self.canvas.copy_from_bbox(self.fig.bbox)
        self.length = max(len(p) for p in self.paths.values())

    def frame(self, step: int) -> Image.Image:
        """RGB image of the paths up to ``step``."""
        self.canvas.restore_region(self.background)
        for name, path in self.paths.items():
            upto = path[: step + 1]
            self.lines[name].set_data(upto[:, 0], upto[:, 1])
            finite = upto[np.isfinite(upto).all(axis=1)]
            self.heads[name].set_data(finite[-1:, 0], finite[-1:, 1])
            self.ax.draw_artist(self.lines[name])
            self.ax.draw_artist(self.heads[name])
        self.counter.set_text(f"step {step}")
        self.ax.draw_artist(self.counter)
        self.canvas.blit(self.fig.bbox)
        return Image.fromarray(np.asarray(self.canvas.buffer_rgba())[..., :3].copy())

    def background_png(self) -> bytes:
        """PNG of the figure without paths."""
        self.canvas.restore_region(self.background)
        buf = io.BytesIO()
        Image.fromarray(np.asarray(self.canvas.buffer_rgba())[..., :3].copy()).save(
            buf, format="PNG", optimize=True)
        return buf.getvalue()

    def pixels(self, path: np.ndarray) -> list[list[float]]:
        """Path in image pixels (origin top-left), cut at the first non-finite point."""
        finite = np.isfinite(path).all(axis=1)
        cut = len(path) if finite.all() else int(np.argmin(finite))
        xy = self.ax.transData.transform(path[:cut]) if cut else np.zeros((0, 2))
        height = self.fig.bbox.height
        limit = 4.0 * max(self.fig.bbox.width, height)  # far away: off-canvas but finite
        xy = np.clip(np.column_stack([xy[:, 0], height - xy[:, 1]]), -limit, limit)
        return np.round(xy, 1).tolist()


def animation_gif(
    function: str | Function2D,
    trajectories: Trajectories,
    frames: int = 60,
    fps: int = 12,
    dpi: int = 80,
    title: str | None = None,
    figsize: tuple[float, float] = (6.4, 5.0),
) -> bytes:
    """Animated GIF (bytes) of the paths growing over ``frames`` evenly spaced steps.

    The last frame is held for one second; the GIF loops.
    """
    scene = _Scene(function, trajectories, title, figsize, dpi)
    images = [scene.frame(k) for k in _frame_steps(scene.length, frames)]
    palette = _palette(images[-1], [scene.colors[n] for n in scene.paths])
    indexed = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    durations = [int(1000 / fps)] * (len(indexed) - 1) + [1000]
    buf = io.BytesIO()
    indexed[0].save(buf, format="GIF", save_all=True, append_images=indexed[1:],
                    duration=durations, loop=0)
    return buf.getvalue()


def _palette(image: Image.Image, colors: Sequence[str]) -> Image.Image:
    """A 256-colour palette for ``image`` that holds ``colors`` (and black, white) exactly.

    Median-cut on the image alone would merge thin path colours into the
    background, so solid swatches of them are appended before quantising.
    """
    from matplotlib.colors import to_rgb

    swatches = [tuple(int(round(255 * c)) for c in to_rgb(col)) for col in colors]
    swatches += [(0, 0, 0), (255, 255, 255)]
    height = max(8, image.height // 4)
    strip = Image.new("RGB", (image.width, height))
    width = image.width // len(swatches)
    for i, rgb in enumerate(swatches):
        strip.paste(rgb, (i * width, 0, (i + 1) * width, height))
    sheet = Image.new("RGB", (image.width, image.height + height))
    sheet.paste(image, (0, 0))
    sheet.paste(strip, (0, image.height))
    return sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT)


_ids = itertools.count()

_PLAYER_JS = """
(function(){
var root=document.getElementById(%(id)s);
var data=JSON.parse(root.querySelector('script[type="application/json"]').textContent);
var lines=root.querySelectorAll('polyline'), heads=root.querySelectorAll('circle');
var slider=root.querySelector('input'), button=root.querySelector('button');
var label=root.querySelector('.step'), timer=null;
function show(k){
  for(var i=0;i<data.paths.length;i++){
    var p=data.paths[i], n=Math.min(p.length, data.index[k]+1);
    lines[i].setAttribute('points', p.slice(0, Math.max(n,1)).join(' '));
    var h=p[Math.max(n-1,0)]; heads[i].setAttribute('cx',h[0]); heads[i].setAttribute('cy',h[1]);
  }
  slider.value=k; label.textContent='step '+data.index[k];
}
function stop(){ if(timer){clearInterval(timer); timer=null; button.textContent='play';} }
button.addEventListener('click', function(){
  if(timer){stop(); return;}
  var k=+slider.value; if(k>=data.index.length-1){k=0;}
  button.textContent='pause';
  timer=setInterval(function(){ show(k); k++; if(k>=data.index.length){stop();} }, data.delay);
});
slider.addEventListener('input', function(){ stop(); show(+slider.value); });
show(data.index.length-1);
})();
"""


def animation_html(
    function: str | Function2D,
    trajectories: Trajectories,
    frames: int = 200,
    fps: int = 20,
    dpi: int = 90,
    title: str | None = None,
    figsize: tuple[float, float] = (6.4, 5.0),
) -> str:
    """Self-contained HTML fragment: figure PNG, SVG paths, play button and step slider.

    ``frames`` evenly spaced steps are playable (the paths keep every point up
    to the shown step). The fragment has a unique ``id`` so several can share a page.
    """
    scene = _Scene(function, trajectories, title, figsize, dpi)
    steps = _frame_steps(scene.length, frames)
    width, height = int(scene.fig.bbox.width), int(scene.fig.bbox.height)
    png = base64.b64encode(scene.background_png()).decode("ascii")
    uid = f"descentlab-trajectories-{next(_ids)}"
    shapes = "".join(
        f'<polyline fill="none" stroke="{scene.colors[n]}" stroke-width="1.8" points=""/>'
        for n in scene.paths
    ) + "".join(
        f'<circle r="4.5" fill="{scene.colors[n]}" stroke="black" cx="-10" cy="-10"/>'
        for n in scene.paths
    )
    data = {"paths": [scene.pixels(p) for p in scene.paths.values()], "index": steps,
            "delay": int(1000 / fps)}
    return (
        f'<div id="{uid}" class="descentlab-trajectories" style="font-family:sans-serif">'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" style="overflow:hidden;display:block">'
        f'<image href="data:image/png;base64,{png}" x="0" y="0" width="{width}" '
        f'height="{height}"/>'
        f'<svg x="0" y="0" width="{width}" height="{height}">{shapes}</svg></svg>'
        f'<div><button type="button">play</button> '
        f'<input type="range" min="0" max="{len(steps) - 1}" value="{len(steps) - 1}" '
        f'style="width:{max(width - 160, 100)}px;vertical-align:middle"> '
        f'<span class="step"></span></div>'
        f'<script type="application/json">{html.escape(json.dumps(data), quote=False)}</script>'
        f"<script>{_PLAYER_JS % {'id': json.dumps(uid)}}</script></div>"
    )


def animate_trajectories(
    function: str | Function2D,
    trajectories: Trajectories,
    out: str | Path,
    frames: int | None = None,
    fps: int | None = None,
    title: str | None = None,
) -> Path:
    """Write the animation to ``out``: ``.gif`` (:func:`animation_gif`) or ``.html``
    (a page around :func:`animation_html`); ``frames``/``fps`` default to those functions'.

    Returns the path written; any other suffix raises ``ValueError``.
    """
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".html"):
        raise ValueError(f"out must end in .gif or .html, got {str(out)!r}")
    options = {k: v for k, v in (("frames", frames), ("fps", fps)) if v is not None}
    if suffix == ".gif":
        path.write_bytes(animation_gif(function, trajectories, title=title, **options))
    else:
        fn = _function(function)
        body = animation_html(fn, trajectories, title=title, **options)
        page = (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(_title(fn, title))}</title></head>\n"
            f"<body>\n{body}\n</body></html>\n"
        )
        path.write_text(page, encoding="utf-8")
    return path
