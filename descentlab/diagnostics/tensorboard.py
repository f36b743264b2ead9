"""Optional TensorBoard logging of a :class:`~descentlab.diagnostics.TrainingMonitor`.

Needs the ``tensorboard`` package (``torch.utils.tensorboard`` imports it).
descentlab does not depend on it — it is large — so this feature raises a
clear ``ImportError`` when it is missing; install it with
``pip install tensorboard``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from descentlab.diagnostics.monitor import TrainingMonitor
    from descentlab.diagnostics.records import Check

__all__ = ["log_to_tensorboard"]


def log_to_tensorboard(monitor: TrainingMonitor, log_dir: str | Path | None = None) -> Any:
    """Write the monitor's measurements to TensorBoard as they are made.

    At every check: the training losses recorded since the previous check
    (``loss/train``), validation losses (``loss/validation``), and per layer
    ``grad_norm/<layer>``, ``relative_gradient/<layer>``,
    ``update_ratio/<layer>`` and ``effective_lr/<layer>``; each new finding
    as text (``findings``). Returns the ``SummaryWriter`` (close it when done).

    Raises:
        ImportError: when the ``tensorboard`` package is not installed.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch.utils.tensorboard imports the tensorboard package
        raise ImportError(
            "TensorBoard logging needs the 'tensorboard' package, which is not installed; "
            "install it with 'pip install tensorboard' (descentlab does not depend on it). "
            "The terminal and HTML reports (descentlab.diagnostics.report) need nothing extra."
        ) from exc
    writer = SummaryWriter(None if log_dir is None else str(log_dir))
    seen = {"loss": 0, "val": 0, "findings": 0}

    def on_check(check: Check) -> None:
        h = monitor.history
        for i in range(seen["loss"], len(h.losses)):
            if math.isfinite(h.losses[i]):
                writer.add_scalar("loss/train", h.losses[i], h.steps[i])
        for i in range(seen["val"], len(h.val_losses)):
            writer.add_scalar("loss/validation", h.val_losses[i], h.val_steps[i])
        seen["loss"], seen["val"] = len(h.losses), len(h.val_losses)
        for name, st in check.layers.items():
            for tag, value in (
                ("grad_norm", st.grad_norm),
                ("relative_gradient", st.relative_gradient),
                ("update_ratio", st.update_ratio),
                ("effective_lr", st.effective_lr),
            ):
                if math.isfinite(value):
                    writer.add_scalar(f"{tag}/{name}", value, check.step)
        for f in monitor.findings[seen["findings"] :]:
            writer.add_text("findings", str(f), max(f.step, 0))
        seen["findings"] = len(monitor.findings)

    monitor.listeners.append(on_check)
    return writer
