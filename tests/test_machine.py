"""What benchmark results record about the machine (``descentlab/machine.py``)."""

from __future__ import annotations

import os

import torch

from descentlab import machine
from descentlab.engine import native

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu vme avx512f avx512_bf16

processor\t: 1
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu vme avx512f avx512_bf16
"""


def test_cpu_info_reads_the_first_line_of_a_key(tmp_path, monkeypatch):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    monkeypatch.setattr(machine, "CPUINFO", path)
    assert machine.cpu_model() == "AMD EPYC 9R14 96-Core Processor"
    assert machine.cpu_info("flags") == "fpu vme avx512f avx512_bf16"
    assert native._cpu_flags() == "fpu vme avx512f avx512_bf16"  # the native cache key's
    assert machine.cpu_info("microcode") is None


def test_without_cpuinfo_the_platform_answers(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "CPUINFO", tmp_path / "missing")
    assert machine.cpu_info("model name") is None
    assert machine.cpu_model()  # platform.processor() or the machine's architecture
    assert native._cpu_flags() == os.uname().machine


def test_describe_machine_names_cpu_threads_and_torch():
    described = machine.describe_machine()
    assert described["cpu"] == machine.cpu_model()
    assert described["cpu_count"] == os.cpu_count()
    assert described["threads"] == torch.get_num_threads()
    assert described["torch"] == torch.__version__
