"""The all-schedules figure and the ``descentlab schedules`` command."""

from __future__ import annotations

import pytest

import descentlab.schedules as S
from descentlab.cli import main
from descentlab.schedules.plot import plateau_demo, plot_schedules, schedule_gallery

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _walk(schedule):
    yield schedule
    for child in schedule.children():
        yield from _walk(child)
    inner = getattr(schedule, "_join", None)
    if inner is not None:
        yield from _walk(inner)


def test_gallery_shows_every_schedule_class():
    used = set()
    for panel in schedule_gallery(200).values():
        for curve in panel.values():
            if isinstance(curve, S.Schedule):
                used.update(type(s) for s in _walk(curve))
    classes = {
        getattr(S, n) for n in S.__all__
        if isinstance(getattr(S, n), type) and issubclass(getattr(S, n), S.Schedule)
    }
    # LambdaSchedule and PiecewiseConstant are thin; the plateau panel is precomputed values
    missing = classes - used - {S.Schedule, S.LambdaSchedule, S.MultiplicativeSchedule,
                                S.PiecewiseConstant,
                                S.ReduceOnPlateau}
    assert not missing, missing


def test_plateau_demo_reduces_after_warmup():
    lrs = plateau_demo(1000)["lr (plateau-driven)"]
    assert lrs[0] == 0.0 and max(lrs) == 1.0
    assert lrs[-1] < 1.0  # at least one reduction happened


def test_plot_writes_png(tmp_path):
    out = tmp_path / "sub" / "s.png"
    fig = plot_schedules({"cos": S.CosineDecay(1.0, 50), "two": {"a": S.Constant(0.5),
                          "b": [0.1, 0.2]}}, total_steps=50, path=out, ncols=1)
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="panels is empty"):
        plot_schedules({}, 10)


def test_command_writes_png(tmp_path, capsys):
    out = tmp_path / "schedules.png"
    assert main(["schedules", "--output", str(out), "--steps", "120"]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert "12 panels" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["schedules", "--steps", "3"])
