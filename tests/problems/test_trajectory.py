"""Trajectories, pictures, and the `visualize` and `list` commands."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from descentlab.cli import main
from descentlab.commands.list import collect
from descentlab.commands.visualize import parse_optimizer_spec
from descentlab.problems import available_problems
from descentlab.problems.analytic import FUNCTIONS
from descentlab.problems.trajectory import (
    named_optimizer,
    path_score,
    run_trajectory,
    tune_learning_rate,
)
from descentlab.problems.visualize import (
    animate_trajectories,
    animation_gif,
    animation_html,
    plot_trajectories,
)


def test_gradient_descent_trajectory_is_the_hand_iteration():
    # f = 0.1 x² + 2 y², GD: x ← (1 − 0.2 lr) x, y ← (1 − 4 lr) y
    path = run_trajectory("ill_conditioned_quadratic", named_optimizer("sgd", lr=0.1), 5)
    x0, y0 = FUNCTIONS["ill_conditioned_quadratic"].start
    k = np.arange(6)
    expected = np.stack([x0 * 0.98**k, y0 * 0.6**k], axis=1)
    np.testing.assert_allclose(path, expected, rtol=1e-5)


def test_trajectory_start_and_divergence():
    path = run_trajectory("square", named_optimizer("sgd", lr=0.1), 3, start=(1.0, -1.0))
    np.testing.assert_allclose(path[0], [1.0, -1.0])
    np.testing.assert_allclose(path[3], [0.8**3, -(0.8**3)], rtol=1e-6)
    blown = run_trajectory("square", named_optimizer("sgd", lr=1e20), 20)
    assert np.isnan(blown[-1]).all() and np.isfinite(blown[0]).all()
    assert path_score("square", blown) == math.inf


def test_trajectory_matches_a_hand_loop_with_adam():
    fn = FUNCTIONS["beale"]
    w = torch.nn.Parameter(torch.tensor(fn.start))
    opt = torch.optim.Adam([w], lr=0.05)
    points = [w.detach().clone()]
    for _ in range(20):
        opt.zero_grad()
        fn(w).backward()
        opt.step()
        points.append(w.detach().clone())
    path = run_trajectory("beale", lambda p: torch.optim.Adam(p, lr=0.05), 20)
    np.testing.assert_allclose(path, torch.stack(points).numpy(), rtol=1e-6)


@pytest.mark.parametrize("bad, error", [({"steps": -1}, ValueError),
                                        ({"start": (1.0, 2.0, 3.0)}, ValueError)])
def test_trajectory_bad_input(bad, error):
    kwargs = {"steps": 3, **bad}
    with pytest.raises(error):
        run_trajectory("square", named_optimizer("sgd", lr=0.1), **kwargs)


def test_named_optimizer_aliases_and_errors():
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = named_optimizer("nesterov", lr=0.1)(params)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["nesterov"]
    with pytest.raises(ValueError, match="valid names: sgd.*momentum"):
        named_optimizer("adamm")
    with pytest.raises(TypeError, match="momentum"):
        named_optimizer("adam", momentum=0.9)


def test_tuning_picks_the_best_rate_on_the_grid():
    # On x² + y², GD with lr = 0.5 jumps to the minimum in one step: the best path.
    assert tune_learning_rate("square", "sgd", 10, grid=(0.01, 0.1, 0.5, 0.9)) == 0.5
    with pytest.raises(ValueError, match="grid"):
        tune_learning_rate("square", "sgd", 10, grid=())


def test_path_score_on_unbounded_functions_prefers_faster_escape():
    slow = run_trajectory("saddle", named_optimizer("sgd", lr=0.01), 30, start=(0.5, 0.1))
    fast = run_trajectory("saddle", named_optimizer("sgd", lr=0.1), 30, start=(0.5, 0.1))
    assert path_score("saddle", fast) < path_score("saddle", slow)


def _paths():
    return {
        "sgd": run_trajectory("himmelblau", named_optimizer("sgd", lr=0.01), 40),
        "adam": run_trajectory("himmelblau", named_optimizer("adam", lr=0.1), 40),
    }


def test_still_figure_has_a_line_per_optimizer(tmp_path):
    fig = plot_trajectories("himmelblau", _paths())
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "sgd" in labels and "adam" in labels
    fig.savefig(tmp_path / "h.png")
    assert Image.open(tmp_path / "h.png").size[0] > 300


def test_gif_has_the_requested_frames_and_path_colours():
    data = animation_gif("himmelblau", _paths(), frames=10)
    import io

    gif = Image.open(io.BytesIO(data))
    assert gif.format == "GIF" and gif.n_frames == 10
    gif.seek(gif.n_frames - 1)
    colours = {c for _, c in gif.convert("RGB").getcolors(1 << 16)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # tab10 blue, orange


def test_html_is_self_contained_and_holds_every_path():
    page = animation_html("himmelblau", _paths(), frames=20)
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "data:image/png;base64," in page
    assert page.count("<polyline") == 2
    start = page.index('<script type="application/json">') + len('<script type="application/json">')
    data = json.loads(page[start:page.index("</script>", start)])
    assert len(data["paths"]) == 2 and len(data["paths"][0]) == 41 and len(data["index"]) == 20


def test_animation_output_suffix_is_checked(tmp_path):
    with pytest.raises(ValueError, match=r"\.gif or \.html"):
        animate_trajectories("himmelblau", _paths(), tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="trajectories"):
        plot_trajectories("himmelblau", {})


def test_visualize_command_writes_its_files(tmp_path, capsys):
    out = tmp_path / "viz"
    code = main(["visualize", "--function", "himmelblau", "--optimizers",
                 "sgd,adam:lr=0.1,momentum", "--steps", "30", "--frames", "8",
                 "--out", str(out)])
    assert code == 0
    for suffix in ("png", "gif", "html", "json"):
        assert (out / f"himmelblau.{suffix}").stat().st_size > 1000
    data = json.loads((out / "himmelblau.json").read_text())
    assert len(data["trajectories"]) == 3
    assert all(len(p) == 31 for p in data["trajectories"].values())
    assert "adam lr=0.1" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--function", "banana"], "argument --function: unknown function 'banana'"),
    (["--optimizers", "adamm"], "did you mean 'adam'? valid names"),
    (["--optimizers", "adam:lr"], "key=value"),
    (["--formats", "png,mp4"], "argument --formats: unknown format 'mp4'"),
    (["--lr", "-1"], "argument --lr: must be a finite number > 0, got '-1'"),
])
def test_visualize_bad_input(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["visualize", "--out", str(tmp_path), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_visualize_unwritable_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["visualize", "--steps", "2", "--out", str(blocker / "sub")])
    assert exc.value.code == 2
    assert "argument --out:" in capsys.readouterr().err


def test_parse_optimizer_spec():
    assert parse_optimizer_spec("sgd:momentum=0.5:nesterov=True") == (
        "sgd", {"momentum": 0.5, "nesterov": True})
    with pytest.raises(ValueError, match="not a literal"):
        parse_optimizer_spec("adam:lr=fast")


def test_list_command(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for name in available_problems():
        assert name in text
    assert "rosenbrock *" in text and "adam" in text
    assert main(["list", "problems", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in data["problems"]] == available_problems()
    assert set(collect("all")) >= {"problems", "functions", "optimizers"}


def test_list_shows_suites(capsys):
    assert main(["list", "suites"]) == 0
    text = capsys.readouterr().out
    assert "descentlab compare --suite NAME" in text
    deep = next(line for line in text.splitlines() if line.startswith("deep "))
    assert "digits_resnet, digits_autoencoder" in deep
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {s["name"] for s in data["suites"]} >= {"default", "deep"}
    rows = {r["name"]: r for r in data["problems"]}
    assert rows["digits_cnn"]["suites"] == ["deep"] and rows["rosenbrock"]["suites"] == ["default"]
    assert rows["square"]["suites"] == []
