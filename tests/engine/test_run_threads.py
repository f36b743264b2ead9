"""An elementwise run's kernel steps on one torch thread when that is faster, with the same bits.

The flat engines time a run of at least 2^15 elements updated by a kernel
whose results do not depend on the thread count (a compiled kernel, torch's
fused kernel over the flat buffer) on all threads and now and then on one
(``engine/whole.py: ThreadChoice``), and keep the faster way. Checked here:
both ways give the same bits (torch's for-loop optimizer is the reference of
the results themselves, elsewhere), and which runs go through the choice.
"""

from __future__ import annotations

import pytest
import torch

import descentlab
from descentlab.engine import whole
from tests.threads import stepped_on, torch_threads

#: 40 × 1,000 elements and two odd shapes: a run above 2^15 elements, with scalar tails
SHAPES = [(1000,)] * 40 + [(37,), (5, 7)]
#: (optimizer, engine): compiled kernels, and torch's fused kernels under the default engine
CASES = [("sgd", "compiled"), ("rmsprop", "compiled"), ("adam", "compiled"),
         ("nadam", "compiled"), ("adam", "auto"), ("sgd", "auto")]
SETTINGS = {"sgd": {"lr": 0.01, "momentum": 0.9}}


def _trained(name: str, engine: str, threads: int, dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in SHAPES]
    opt = descentlab.make_optimizer(name, params, engine=engine, **SETTINGS.get(name, {}))
    with pytest.MonkeyPatch.context() as patch:  # no choosing: ``threads`` throughout
        patch.setattr(whole.ThreadChoice, "SMALLEST", 1 << 62)
        return stepped_on(threads, opt, params, 3, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("name", "engine"), CASES)
def test_same_bits_on_one_thread_and_on_two(name, engine, dtype):
    one = _trained(name, engine, 1, dtype)
    two = _trained(name, engine, 2, dtype)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))


@pytest.mark.parametrize(("name", "engine", "chosen"), [
    ("adam", "auto", True),      # torch's fused kernel
    ("nadam", "compiled", True),
    ("nadam", "flat", False),    # eager passes: not timed
])
def test_a_kernel_run_goes_through_the_choice(name, engine, chosen, monkeypatch):
    calls = []
    original = whole.ThreadChoice.run
    monkeypatch.setattr(whole.ThreadChoice, "run",
                        lambda self, call, *args: calls.append(1) or original(self, call, *args))
    with torch_threads(2):
        small = [torch.nn.Parameter(torch.randn(100)) for _ in range(3)]  # under 2^15: never
        large = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
        for params, expected in ((small, 0), (large, 2 if chosen else 0)):
            opt = descentlab.make_optimizer(name, params, engine=engine)
            calls.clear()
            for _ in range(2):
                for p in params:
                    p.grad = torch.randn(p.shape)
                opt.step()
            assert len(calls) == expected
