"""The step benchmarks' peak-memory probe: it measures, and prints nothing on stderr."""

import torch

from descentlab.bench.step_speed import peak_extra_bytes


def test_peak_extra_bytes_counts_a_temporary_and_prints_nothing(capfd):
    n = 1_000_000

    def step():
        tmp = torch.ones(n, dtype=torch.float32)
        return float(tmp.sum())

    peak = peak_extra_bytes(step)
    captured = capfd.readouterr()
    assert peak >= 4 * n
    assert "profiler_start" not in captured.err and "profiler_stop" not in captured.err
    assert captured.err == ""
