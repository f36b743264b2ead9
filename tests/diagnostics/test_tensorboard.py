"""TensorBoard logging: a clear error without the package, event files with it."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from descentlab.diagnostics.monitor import TrainingMonitor
from descentlab.diagnostics.tensorboard import log_to_tensorboard

HAVE_TB = importlib.util.find_spec("tensorboard") is not None


def _monitor():
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, opt, TrainingMonitor(model, opt, interval=1)


@pytest.mark.skipif(HAVE_TB, reason="tensorboard is installed")
def test_missing_tensorboard_gives_a_clear_error():
    _, _, mon = _monitor()
    with pytest.raises(ImportError, match="pip install tensorboard"):
        log_to_tensorboard(mon)
    assert mon.listeners == []


@pytest.mark.skipif(not HAVE_TB, reason="tensorboard is not installed")
def test_writes_event_files(tmp_path):  # pragma: no cover - needs the optional package
    model, opt, mon = _monitor()
    writer = log_to_tensorboard(mon, tmp_path)
    for _ in range(3):
        loss = model(torch.ones(4, 3)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.record_loss(loss)
    writer.close()
    assert list(tmp_path.glob("events.out.tfevents.*"))
