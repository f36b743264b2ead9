"""SOAP against pytorch_optimizer.SOAP on tensors of every order and under merge_dims.

The package conformance suite (package_infos.py) covers resume, copies, schedulers,
groups, hooks and dtypes on the small shared model; this adds 3-D, 4-D and 0-D tensors,
merge_dims with both data formats, the first step and the refusals.
"""

from __future__ import annotations

import pytest
import pytorch_optimizer
import torch

import descentlab
from tests.optim.helpers import float64_default, max_rel_diff
from tests.optim.package_infos import PACKAGE_INFO_BY_NAME

#: a matrix, a bias, a one-element vector, a 3-D and a 4-D tensor, and a 0-D scale
SHAPES = [(5, 3), (3,), (1,), (4, 3, 2), (2, 3, 4, 5), ()]
#: shapes for merge_dims (every parameter has more than max_precondition_dim=20 elements, or 1)
MERGE_SHAPES = [(12, 30, 1), (2, 3, 8, 30), (), (7, 25)]

#: the package suite's settings (which cover every option but merge_dims and data_format)
SETTINGS = PACKAGE_INFO_BY_NAME["soap"].settings
MERGE_SETTINGS = [
    {"merge_dims": True, "max_precondition_dim": 20, "precondition_frequency": 4},
    {"merge_dims": True, "max_precondition_dim": 20, "data_format": "channels_last",
     "precondition_frequency": 5, "precondition_1d": True},
]


def _params(shapes, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
            for s in shapes]


def _steps(opt, params, start, count):
    """Gradients of a smooth loss that couples every entry: ∇ of Σ tanh(p)² · (1 + noise)."""
    for t in range(start, start + count):
        gen = torch.Generator().manual_seed(100 + t)
        opt.zero_grad()
        loss = sum((torch.tanh(p) ** 2 * (1 + torch.rand(p.shape, generator=gen,
                                                          dtype=torch.float64).to(p.dtype)))
                   .sum() + (p.sum() ** 2) for p in params)
        if opt.param_groups[0].get("maximize") or getattr(opt, "maximize", False):
            loss = -loss
        loss.backward()
        opt.step()


def _trained(cls, shapes, setting, steps=60, dtype=torch.float64, **extra):
    params = _params(shapes, dtype)
    opt = cls(params, **setting, **extra)
    _steps(opt, params, 0, steps)
    return params, opt


CASES = [(SHAPES, s) for s in SETTINGS] + [(MERGE_SHAPES, s) for s in MERGE_SETTINGS]


@pytest.mark.parametrize("engine", ["reference", "flat"])
@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_float64_parity_with_pytorch_optimizer_over_60_steps(case, engine):
    shapes, setting = case
    with float64_default():
        ours, opt = _trained(descentlab.SOAP, shapes, setting, engine=engine)
        ref, _ = _trained(pytorch_optimizer.SOAP, shapes, setting)
    assert max_rel_diff(ours, ref) <= 1e-13  # bitwise equal in our runs
    assert max_rel_diff(ours, _params(shapes)) > 1e-3  # it moved
    # the bases were refreshed (k = 60 − 1 passed several multiples of the frequency)
    q = next(v for k, v in opt.state[ours[0]].items() if k.startswith("Q_"))
    torch.testing.assert_close(q.T @ q, torch.eye(q.shape[0], dtype=q.dtype), atol=1e-5, rtol=0)


def test_square_parameters_keep_their_bases_column_major_under_the_flat_engine():
    """A square matrix's bases are shaped like it: they stay out of the flat slots (no
    transposing copy per step), column-major slices of one stack per same-shape batch that
    stays in place from step to step, and the run stays bitwise equal to the reference."""
    shapes = [(6, 6), (6, 6), (3, 3, 3)]
    setting = {"precondition_frequency": 3}
    with float64_default():
        ours, opt = _trained(descentlab.SOAP, shapes, setting, steps=12, engine="flat")
        ref, _ = _trained(pytorch_optimizer.SOAP, shapes, setting, steps=12)
        assert max_rel_diff(ours, ref) == 0.0
        bases = {(i, key): value for i, p in enumerate(ours)
                 for key, value in opt.state[p].items() if key.startswith("Q_")}
        for key, value in bases.items():
            assert value.t().is_contiguous(), key  # column-major, as LAPACK returns it
        _steps(opt, ours, 12, 2)
        for (i, key), value in bases.items():
            assert opt.state[ours[i]][key] is value, key  # never replaced nor copied


def test_float32_parity_with_pytorch_optimizer():
    ours, _ = _trained(descentlab.SOAP, SHAPES, SETTINGS[1], dtype=torch.float32)
    ref, _ = _trained(pytorch_optimizer.SOAP, SHAPES, SETTINGS[1], dtype=torch.float32)
    assert max_rel_diff(ours, ref) <= 1e-6  # bitwise equal in our runs


def test_the_first_step_only_builds_the_bases():
    params = _params([(4, 3)])
    before = params[0].detach().clone()
    opt = descentlab.SOAP(params)
    _steps(opt, params, 0, 1)
    assert torch.equal(params[0].detach(), before)
    state = opt.state[params[0]]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq", "GG_0", "Q_0", "GG_1", "Q_1"}
    assert state["Q_0"].shape == (4, 4) and state["Q_1"].shape == (3, 3)


def test_refuses_merge_dims_where_the_reference_cannot_reshape():
    with pytest.raises(ValueError, match=r"merge_dims=True.*shape \(5, 3\).*15 elements"):
        descentlab.SOAP([torch.zeros(5, 3, requires_grad=True)], merge_dims=True)
    with pytest.raises(RuntimeError):  # the reference's own failure on the same parameter
        p = torch.zeros(5, 3, requires_grad=True)
        p.grad = torch.ones(5, 3)
        pytorch_optimizer.SOAP([p], merge_dims=True).step()
    # a group of its own with merge_dims=False takes it
    descentlab.SOAP([{"params": [torch.zeros(300, 40, requires_grad=True)]},
                     {"params": [torch.zeros(5, 3, requires_grad=True)], "merge_dims": False}],
                    merge_dims=True, max_precondition_dim=100)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("precondition_frequency", 0, "precondition_frequency must be an integer >= 1, got 0"),
    ("max_precondition_dim", 2.5, "max_precondition_dim must be an integer"),
    ("shampoo_beta", 1.5, r"shampoo_beta must be in \[0.0, 1.0\], got 1.5"),
    ("data_format", "nhwc", "data_format must be one of"),
    ("betas", (0.9, 1.0), r"betas\[1\] must be in"),
])
def test_bad_arguments_are_refused_by_name(key, value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        descentlab.SOAP([torch.zeros(3, 3, requires_grad=True)], **{key: value})


def test_the_flat_engine_copies_gradients_only_for_batched_rules(monkeypatch):
    """PlainShampoo steps one tensor at a time: fresh gradients are read where they are, not
    copied into the flat buffer first; SOAP's and Shampoo's stacks of matrices are views of
    the buffer, so they gather them."""
    from descentlab.engine.buffers import Bucket

    gathered = []
    original = Bucket.take_grads
    monkeypatch.setattr(Bucket, "take_grads",
                        lambda self, indices, *a, **k: gathered.append(len(indices))
                        or original(self, indices, *a, **k))
    for cls, expected in ((descentlab.PlainShampoo, []), (descentlab.SOAP, [2, 2, 2]),
                          (descentlab.Shampoo, [2, 2, 2])):
        gathered.clear()
        params = _params([(4, 3), (4, 3)], torch.float32)
        opt = cls(params, engine="flat")
        _steps(opt, params, 0, 3)  # zero_grad() then backward(): fresh gradients every step
        assert gathered == expected, cls


@pytest.mark.parametrize("setting", SETTINGS, ids=[str(i) for i in range(len(SETTINGS))])
def test_stacks_of_matrices_step_with_batched_products_bitwise(setting, monkeypatch):
    """Three same-shape matrices large enough for batched products (``bmm`` on each matrix
    runs the BLAS kernel of the reference's ``mm``): the flat engine's batched step equals
    the reference's per-matrix one bit for bit, and the reference engine's."""
    from descentlab.rules.soap import SOAPRule

    batched = []
    original = SOAPRule._update_matrices
    monkeypatch.setattr(SOAPRule, "_update_matrices",
                        lambda self, p, *a: batched.append(len(p)) or original(self, p, *a))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # batched from two threads on
    shapes = [(24, 20)] * 3 + [(20,)]
    assert 24 * 20 * 20 >= SOAPRule.batch_min_work
    with float64_default():
        ours, _ = _trained(descentlab.SOAP, shapes, setting, steps=12, engine="flat")
        alone, _ = _trained(descentlab.SOAP, shapes, setting, steps=12, engine="reference")
        ref, _ = _trained(pytorch_optimizer.SOAP, shapes, setting, steps=12)
    assert max_rel_diff(alone, ref) == 0.0
    assert max_rel_diff(ours, ref) == 0.0
    assert batched == ([3] * 11 if setting.get("max_precondition_dim", 99) > 24 else [])
