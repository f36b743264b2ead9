"""The HTML report in headless Chromium: no console errors, every figure present and drawn."""

from __future__ import annotations

import re
import time

import pytest

from benchmarks.browser import headless_chromium
from descentlab.bench.harness import compare
from tests.browser import chromium_reason

pytestmark = pytest.mark.browser

_reason = chromium_reason()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = compare(
        "sgd,adam", "square,noisy_quadratic", trials=3, seeds=2, workers=1, progress=False, out=out
    )
    return result


def test_report_is_self_contained(report) -> None:
    html = (report.out / "report.html").read_text()
    links = re.findall(r"""(?:src|href)\s*=\s*["']?([^"' >]+)""", html)
    assert links and all(link.startswith(("data:", "#")) for link in links), links
    assert "<link" not in html and "@import" not in html
    for name in ("performance_profile", "loss_curves", "lr_sensitivity", "trajectories_square"):
        data = (report.out / "figures" / f"{name}.png").read_bytes()
        assert data.startswith(b"\x89PNG")


@pytest.mark.skipif(_reason is not None, reason=_reason or "")
def test_report_in_headless_chromium(report) -> None:
    expected = ["performance-profile", "loss-curves", "lr-sensitivity", "trajectory-square"]
    with headless_chromium() as driver:
        driver.get((report.out / "report.html").resolve().as_uri())
        time.sleep(0.5)
        manifest = driver.execute_script(
            "return JSON.parse(document.getElementById('figure-manifest').textContent)"
        )
        assert manifest == expected
        for fig_id in manifest:
            state = driver.execute_script(
                """const f = document.querySelector(`figure[data-figure="${arguments[0]}"]`);
                if (!f) return null;
                const imgs = Array.from(f.querySelectorAll('img'));
                return {height: f.getBoundingClientRect().height,
                        images: imgs.map(i => i.complete && i.naturalWidth > 0),
                        svg: f.querySelectorAll('svg image').length};""",
                fig_id,
            )
            assert state is not None, f"figure {fig_id} missing"
            assert state["height"] > 100, fig_id
            assert all(state["images"]) and (state["images"] or state["svg"]), (fig_id, state)
        # the animation runs: paths grow from one point to the whole trajectory
        driver.execute_script(
            "const r = document.querySelector('figure[data-anim] input[type=range]');"
            "r.value = '0'; r.dispatchEvent(new Event('input'));"
        )
        start = driver.execute_script(
            "return document.querySelector('figure[data-anim] polyline').getAttribute('points')"
        )
        assert len(start.split()) == 1
        driver.find_element("css selector", "figure[data-anim] button").click()
        time.sleep(1.0)
        later = driver.execute_script(
            "return document.querySelector('figure[data-anim] polyline').getAttribute('points')"
        )
        assert len(later.split()) > 5
        rows = driver.execute_script(
            "return Array.from(document.querySelectorAll('#leaderboard tbody tr'))"
            ".map(r => r.cells[1].textContent)"
        )
        assert rows == [r["optimizer"] for r in report.results.leaderboard]
        external = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(n => !n.startsWith('data:'))"
        )
        assert external == []
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert errors == []
