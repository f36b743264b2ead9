"""The machine a measurement ran on, as benchmark results record it.

Speed ratios depend on the processor as much as on the code (bfloat16 matrix
products, for example, run on AMX units on some CPUs and on the vector units
on others), so every benchmark's JSON names the CPU beside its load average.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["CPUINFO", "cpu_info", "cpu_model", "describe_machine"]

#: where Linux describes the processors
CPUINFO = Path("/proc/cpuinfo")


def cpu_info(key: str) -> str | None:
    """The value of the first ``key`` line of :data:`CPUINFO` (e.g. ``"model name"``,
    ``"flags"``), or None where there is no such file or line."""
    try:
        with CPUINFO.open(encoding="utf-8") as f:
            for line in f:
                name, sep, value = line.partition(":")
                if sep and name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The processor's name (``model name`` on Linux, else what :mod:`platform` says)."""
    return cpu_info("model name") or platform.processor() or platform.machine() or "unknown"


def describe_machine() -> dict[str, Any]:
    """The CPU, its core count, torch's thread count and version, and the platform."""
    import torch

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
