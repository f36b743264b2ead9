"""Gradient accumulation equals one large batch (float64)."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from descentlab.accumulation import (
    GradientAccumulator,
    accumulate_gradients,
    batch_size,
    split_batch,
)


def setup(n=30):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.LayerNorm(16), torch.nn.GELU(), torch.nn.Linear(16, 3)
    ).double()
    x = torch.randn(n, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (n,))
    return model, x, y


def grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


def full_batch_grads(model, x, y, reduction):
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y, reduction=reduction)
    loss.backward()
    return loss.detach(), grads(model)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("micro", [1, 7, 10, 30])  # 7 gives unequal micro-batches (7,7,7,7,2)
def test_accumulate_equals_large_batch(reduction, micro):
    model, x, y = setup()
    ref_loss, ref = full_batch_grads(model, x, y, reduction)
    model.zero_grad()
    loss = accumulate_gradients(
        lambda b: torch.nn.functional.cross_entropy(model(b[0]), b[1], reduction=reduction),
        split_batch((x, y), micro),
        reduction=reduction,
    )
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    for g, r in zip(grads(model), ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-15)


def test_naive_one_over_k_weighting_is_wrong_for_unequal_sizes():
    """The reason for n_i / N weights: 1/k differs from the large batch when sizes differ."""
    model, x, y = setup()
    _, ref = full_batch_grads(model, x, y, "mean")
    model.zero_grad()
    parts = split_batch((x, y), 7)
    for xb, yb in parts:
        (torch.nn.functional.cross_entropy(model(xb), yb) / len(parts)).backward()
    assert not torch.allclose(grads(model)[0], ref[0], rtol=1e-6)


@pytest.mark.parametrize("style", ["backward", "zero_grad_first", "zero_grad_last"])
def test_accumulator_matches_large_batch_training(style):
    """Streaming with acc.backward(loss), and an unchanged training loop (zero_grad,
    backward, step per micro-batch, zero_grad before or after) over the wrapper: both
    equal large-batch training. In the loop, step() averages the summed gradients and
    zero_grad() keeps them while micro-batches are pending."""
    model, x, y = setup(32)
    ref_model = copy.deepcopy(model)
    acc = GradientAccumulator(torch.optim.Adam(model.parameters(), lr=0.01), 4)
    ref_opt = torch.optim.Adam(ref_model.parameters(), lr=0.01)
    stepped = []
    for _ in range(3):  # three optimizer steps, each from 4 micro-batches of 8
        for xb, yb in split_batch((x, y), 8):
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            if style == "backward":
                stepped.append(acc.backward(loss))
                continue
            if style == "zero_grad_first":
                acc.zero_grad()
            loss.backward()
            acc.step()
            stepped.append(acc.stepped)
            if style == "zero_grad_last":
                acc.zero_grad()
        ref_opt.zero_grad()
        torch.nn.functional.cross_entropy(ref_model(x), y).backward()
        ref_opt.step()
    assert stepped == [False, False, False, True] * 3 and acc.optimizer_steps == 3
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_drop_in_flush_and_mixed_use():
    model, x, y = setup(16)
    _, ref = full_batch_grads(model, x[:8], y[:8], "mean")
    seen = {}
    model.zero_grad()
    acc = GradientAccumulator(torch.optim.SGD(model.parameters(), lr=0.0), 4,
                              clip=lambda ps: seen.setdefault("g", [p.grad.clone() for p in ps]))
    for xb, yb in split_batch((x[:8], y[:8]), 4):
        acc.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        acc.step()
    assert acc.flush() and acc.pending == 0
    for g, r in zip(seen["g"], ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-15)
    acc.step()
    with pytest.raises(RuntimeError, match="use one of them per group"):
        acc.backward(torch.nn.functional.cross_entropy(model(x), y))


def test_flush_rescales_partial_group():
    model, x, y = setup(16)
    _, ref = full_batch_grads(model, x[:8], y[:8], "mean")
    seen = {}
    model.zero_grad()
    acc = GradientAccumulator(
        torch.optim.SGD(model.parameters(), lr=0.0),
        accumulation_steps=4,
        clip=lambda ps: seen.setdefault("g", [p.grad.clone() for p in ps]),
    )
    for xb, yb in split_batch((x[:8], y[:8]), 4):  # only 2 of 4 micro-batches arrive
        acc.backward(torch.nn.functional.cross_entropy(model(xb), yb))
    assert acc.flush() and not acc.flush()
    for g, r in zip(seen["g"], ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-15)


def test_no_sync_used_on_all_but_last():
    calls = []

    class FakeDDP(torch.nn.Linear):
        def no_sync(self):
            calls.append("no_sync")
            return contextlib.nullcontext()

    m = FakeDDP(2, 1).double()
    xs = split_batch(torch.randn(9, 2, dtype=torch.float64), 3)
    accumulate_gradients(lambda b: m(b).mean(), xs, model=m)
    assert calls == ["no_sync", "no_sync"]


def test_split_batch_structures_and_errors():
    x = torch.arange(10)
    parts = split_batch({"x": x, "meta": "tag", "pair": (x, x * 2)}, 4)
    assert [batch_size(p) for p in parts] == [4, 4, 2]
    assert parts[2]["meta"] == "tag" and parts[1]["pair"][1].tolist() == [8, 10, 12, 14]
    with pytest.raises(ValueError, match="every tensor in the batch must have 10 rows"):
        split_batch((x, torch.zeros(3)), 2)
    with pytest.raises(ValueError, match="micro_batch_size must be an integer >= 1, got 0"):
        split_batch(x, 0)
    with pytest.raises(ValueError, match="reduction"):
        accumulate_gradients(lambda b: b.sum(), [x], reduction="none")
    with pytest.raises(ValueError, match="accumulation_steps"):
        GradientAccumulator(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))]), 0)
