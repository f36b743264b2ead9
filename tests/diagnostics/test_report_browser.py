"""The HTML diagnosis report in headless Chromium: renders, no console errors, plots drawn."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from descentlab.diagnostics.monitor import TrainingMonitor
from descentlab.diagnostics.report import write_html

pytestmark = pytest.mark.browser


def test_report_renders_findings_and_plots(tmp_path, driver):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # a stalled optimizer to report
    mon = TrainingMonitor(model, opt, interval=2)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    for _ in range(6):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.record_loss(loss)
    page = write_html(mon, tmp_path / "report.html")
    driver.get(page.as_uri())
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    kinds = driver.execute_script(
        "return Array.from(document.querySelectorAll('tr.finding')).map(r => r.dataset.kind)"
    )
    assert kinds == ["stalled_optimizer"]
    sizes = driver.execute_script(
        "return Array.from(document.querySelectorAll('figure svg'))"
        ".map(s => s.getBoundingClientRect().width * s.getBoundingClientRect().height)"
    )
    assert len(sizes) == 3 and min(sizes) > 10_000
    driver.execute_script("document.querySelector('details').open = true")
    assert "learning_rates" in driver.find_element("css selector", "details ul").text
