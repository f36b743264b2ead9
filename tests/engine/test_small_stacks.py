"""A batched tensor rule's stack steps on one torch thread when that is faster, with the same bits.

``engine/whole.py: ThreadChoice`` times each stack's step on all threads and,
now and then, on one, and keeps the faster way; only for a rule that declares
``same_bits_on_any_thread_count`` (Muon, Adafactor), checked here on stacks
large enough for torch to split their ops over two threads. SOAP (LAPACK's
QR and eigh) and Shampoo (its 1×1 block statistics, a dot product MKL splits)
round differently on one thread and do not declare it.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import descentlab
from descentlab.engine import whole
from descentlab.rules import RULES
from descentlab.rules.base import TensorRule
from tests.threads import stepped_on, torch_threads

#: stacks (count, m, n) of more than 2^15 elements each (torch splits their ops over threads)
STACKS = [(200, 16, 16), (12, 64, 64), (1, 256, 256)]
CLASSES = {"adafactor": (descentlab.Adafactor, {"lr": 0.01}),
           "muon": (descentlab.Muon, {"lr": 0.02})}


def _trained(cls, setting, threads, dtype):
    gen = torch.Generator().manual_seed(0)
    shapes = [(m, n) for count, m, n in STACKS for _ in range(count)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]
    opt = cls(params, **setting)
    with pytest.MonkeyPatch.context() as patch:  # no choosing: ``threads`` throughout
        patch.setattr(type(opt.rule), "same_bits_on_any_thread_count", False)
        return stepped_on(threads, opt, params, 2, dtype)


def test_the_rules_that_declare_it_are_the_batched_ones_checked_here():
    declared = {name for name, rule in RULES.items() if isinstance(rule, TensorRule)
                and rule.batched and rule.same_bits_on_any_thread_count}
    assert declared == set(CLASSES)


@pytest.mark.parametrize(("name", "dtype", "native"), [
    ("adafactor", torch.float32, False), ("adafactor", torch.float64, False),
    ("adafactor", torch.float32, True), ("adafactor", torch.float64, True),
    ("muon", torch.float32, False)],  # Muon: bfloat16 inside
    ids=["adafactor-float32", "adafactor-float64", "adafactor-library-float32",
         "adafactor-library-float64", "muon-float32"])
def test_same_bits_on_one_thread_and_on_two(name, dtype, native, monkeypatch):
    """Adafactor's eager passes and (where gcc builds it) its C library's."""
    from descentlab.rules import adafactor_kernel

    if native and adafactor_kernel.LIBRARY.wait() is None:
        pytest.skip(f"Adafactor's library is not available: {adafactor_kernel.LIBRARY.error}")
    if not native:
        monkeypatch.setattr(adafactor_kernel, "stack", lambda param, grad: None)
    cls, setting = CLASSES[name]
    one = _trained(cls, setting, 1, dtype)
    two = _trained(cls, setting, 2, dtype)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))


class _Stack:
    """A fake step on a fake clock: 10 time units the slow way, 1 the fast way."""

    def __init__(self) -> None:
        self.slow_on_one = False
        self.ways: list[int] = []
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def __call__(self) -> None:
        one = torch.get_num_threads() == 1
        self.ways.append(1 if one else 2)
        self.now += 10.0 if one == self.slow_on_one else 1.0


def test_the_choice_keeps_the_faster_way_and_probes_less_often_while_it_holds(monkeypatch):
    stack = _Stack()
    monkeypatch.setattr(whole, "time", stack)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        choice = whole.ThreadChoice()
        for _ in range(100):  # one thread faster (the other core busy)
            choice.run(stack)
        first = stack.ways[:]
        assert first[:5] == [2, 2, 2, 1, 1]  # the fourth step probes one thread, which wins
        probes = [k for k, way in enumerate(first) if way == 2 and k > 3]
        assert [b - a for a, b in itertools.pairwise(probes)] == [16, 64]  # losing: apart
        stack.slow_on_one = True  # the load is gone: all threads faster again
        for _ in range(400):
            choice.run(stack)
        assert stack.ways[-10:] == [2] * 10 and not choice.one
    finally:
        torch.set_num_threads(threads)


def test_a_kept_way_that_gets_slower_is_probed_within_four_steps(monkeypatch):
    stack = _Stack()
    stack.slow_on_one = True  # all threads faster: kept, its probes of one thread lose
    monkeypatch.setattr(whole, "time", stack)
    with torch_threads(2):
        choice = whole.ThreadChoice()
        for _ in range(30):
            choice.run(stack)
        assert not choice.one and stack.ways[-1] == 2
        stack.slow_on_one = False  # the second thread now waits: one thread faster
        for _ in range(5):  # all threads, ten times slower than before: a probe follows
            choice.run(stack)
        assert stack.ways[-5:] == [2, 2, 2, 2, 1] and choice.one
        stack.slow_on_one = True
        for _ in range(5):  # one thread now slow: the probe 4 steps after the switch wins
            choice.run(stack)
        assert stack.ways[-5:] == [1, 1, 1, 2, 2] and not choice.one


def test_a_flat_engine_stack_of_a_declaring_rule_goes_through_the_choice(monkeypatch):
    """Muon's stack of 2^15 elements or more does; its smaller stack, and SOAP's, do not."""
    runs = []
    original = whole.ThreadChoice.run
    monkeypatch.setattr(whole.ThreadChoice, "run",
                        lambda self, call, *args: runs.append(args[0].shape)
                        or original(self, call, *args))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for opt in (descentlab.Muon([torch.nn.Parameter(torch.randn(s)) for s in
                                     [(128, 128)] * 2 + [(8, 8)] * 3], lr=0.02),
                    descentlab.SOAP([torch.nn.Parameter(torch.randn(128, 128))
                                     for _ in range(2)])):
            for p in opt.param_groups[0]["params"]:
                p.grad = torch.randn(p.shape)
            opt.step()
    finally:
        torch.set_num_threads(threads)
    assert runs == [torch.Size([2, 128, 128])]
