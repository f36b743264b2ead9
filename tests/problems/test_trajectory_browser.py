"""The HTML trajectory animation in headless Chromium: no console errors, the player works."""

from __future__ import annotations

import pytest

from descentlab.problems.trajectory import named_optimizer, run_trajectory
from descentlab.problems.visualize import animate_trajectories

pytestmark = pytest.mark.browser


def test_html_animation_plays_in_chromium(tmp_path, driver):
    paths = {
        "sgd": run_trajectory("rosenbrock", named_optimizer("sgd", lr=1e-3), 50),
        "adam": run_trajectory("rosenbrock", named_optimizer("adam", lr=0.1), 50),
    }
    page = animate_trajectories("rosenbrock", paths, tmp_path / "r.html")
    driver.get(page.as_uri())
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    step = driver.find_element("css selector", ".step")
    assert step.text == "step 50"
    points = driver.execute_script(
        "return Array.from(document.querySelectorAll('polyline'))"
        ".map(p => p.getAttribute('points').split(' ').length)")
    assert points == [51, 51]
    driver.execute_script(
        "var s=document.querySelector('input'); s.value=10; s.dispatchEvent(new Event('input'));")
    assert step.text == "step 10"
    points = driver.execute_script(
        "return document.querySelector('polyline').getAttribute('points').split(' ').length")
    assert points == 11
    width = driver.execute_script("return document.querySelector('image').getBBox().width")
    assert width > 300
