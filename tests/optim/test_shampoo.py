"""Shampoo against pytorch_optimizer.ScalableShampoo on tensors of every order, blocks and skips.

The package conformance suite (package_infos.py) covers resume, copies, schedulers,
groups, hooks and dtypes on the small shared model; this adds 3-D, 4-D, square and 0-D
tensors, blocks of several sides, the skip options, resume across a root computation,
the matrix roots themselves and the refusals.
"""

from __future__ import annotations

import pytest
import pytorch_optimizer
import torch

import descentlab
from descentlab.rules.matrix_roots import inverse_root_schur_newton, inverse_root_svd
from descentlab.rules.shampoo import shampoo_layout
from tests.copies import saved_and_loaded
from tests.optim.helpers import float64_default, max_rel_diff
from tests.threads import one_thread

#: a matrix, a bias, a one-element vector, a 3-D, a square, a larger and a 4-D tensor, a 0-D
SHAPES = [(5, 3), (3,), (1,), (4, 3, 2), (6, 6), (9, 7), (2, 3, 4, 5), ()]

#: every option of the reference (codes as its IntEnum values)
SETTINGS = [
    {"lr": 0.01, "start_preconditioning_step": 5, "preconditioning_compute_steps": 3,
     "shape_interpretation": False},
    {"lr": 0.01, "start_preconditioning_step": 5, "preconditioning_compute_steps": 4,
     "block_size": 4, "graft_type": 2, "weight_decay": 0.1},
    {"lr": 0.01, "start_preconditioning_step": 3, "preconditioning_compute_steps": 7,
     "block_size": 3, "graft_type": 3, "moving_average_for_momentum": True,
     "decoupled_weight_decay": True, "weight_decay": 0.1, "decoupled_learning_rate": False},
    {"lr": 0.01, "start_preconditioning_step": 3, "preconditioning_compute_steps": 5,
     "block_size": 4, "graft_type": 4, "pre_conditioner_type": 1, "nesterov": False,
     "use_svd": True},
    {"lr": 0.01, "start_preconditioning_step": 1, "preconditioning_compute_steps": 2,
     "shape_interpretation": False, "graft_type": 0, "pre_conditioner_type": 2,
     "statistics_compute_steps": 2, "inverse_exponent_override": 2, "betas": (0.8, 0.9)},
    {"lr": 0.01, "start_preconditioning_step": 2, "preconditioning_compute_steps": 3,
     "shape_interpretation": False, "use_svd": True, "maximize": True},
    {"lr": 0.01, "start_preconditioning_step": 2, "preconditioning_compute_steps": 3,
     "shape_interpretation": False, "skip_preconditioning_rank_lt": 3,
     "no_preconditioning_for_layers_with_dim_gt": 6, "matrix_eps": 1e-4, "diagonal_eps": 1e-6,
     "graft_type": 2},
    {"lr": 0.01},
]


def _params(shapes, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
            for s in shapes]


def _steps(opt, params, start, count, maximize=False):
    """Gradients of a smooth loss coupling every entry: ∇ of Σ (tanh p − 0.3)²(1 + noise)."""
    for t in range(start, start + count):
        gen = torch.Generator().manual_seed(100 + t)
        opt.zero_grad()
        loss = sum(((torch.tanh(p) - 0.3) ** 2 * (1 + torch.rand(
            p.shape, generator=gen, dtype=torch.float64).to(p.dtype))).sum()
            + 0.1 * p.sum() ** 2 for p in params)
        (-loss if maximize else loss).backward()
        opt.step()


def _trained(cls, shapes, setting, steps=60, dtype=torch.float64, **extra):
    params = _params(shapes, dtype)
    opt = cls(params, **setting, **extra)
    torch.manual_seed(0)  # the power iterations' random starts
    _steps(opt, params, 0, steps, setting.get("maximize", False))
    return params, opt


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


#: every setting under the reference engine, the blocked ones under the flat engine too
CASES = [(s, "reference") for s in SETTINGS] + [(s, "flat") for s in SETTINGS[1:3]]


@pytest.mark.parametrize(("setting", "engine"), CASES,
                         ids=[f"{SETTINGS.index(s)}-{e}" for s, e in CASES])
def test_float64_parity_with_pytorch_optimizer_over_60_steps(setting, engine):
    with float64_default():
        ours, opt = _trained(descentlab.Shampoo, SHAPES, setting, engine=engine)
        ref, _ = _trained(pytorch_optimizer.ScalableShampoo, SHAPES, setting)
    assert max_rel_diff(ours, ref) <= 1e-13  # bitwise equal in our runs
    assert max_rel_diff(ours, _params(SHAPES)) > 1e-3  # it moved


@pytest.mark.parametrize("setting", SETTINGS[:2], ids=["0", "1"])
def test_the_preconditioner_changes_the_step(setting):
    """The matrices' direction is Shampoo's, not the graft's (a run that never preconditions)."""
    with float64_default():
        ours, opt = _trained(descentlab.Shampoo, SHAPES, setting)
        graft_only, _ = _trained(descentlab.Shampoo, SHAPES,
                                 {**setting, "start_preconditioning_step": 10**6})
    assert max_rel_diff(ours[:1], graft_only[:1]) > 1e-2
    # the roots were computed: not the identity any more
    roots = [v for k, v in opt.state[ours[0]].items() if k.startswith("preconditioners_")]
    assert roots and not any(torch.equal(r, torch.eye(r.shape[-1]).expand_as(r)) for r in roots)


def test_float32_parity_with_pytorch_optimizer():
    ours, _ = _trained(descentlab.Shampoo, SHAPES, SETTINGS[0], dtype=torch.float32)
    ref, _ = _trained(pytorch_optimizer.ScalableShampoo, SHAPES, SETTINGS[0], dtype=torch.float32)
    assert max_rel_diff(ours, ref) <= 1e-6  # bitwise equal in our runs


@pytest.mark.parametrize("via_torch_save", [False, True], ids=["in-memory", "torch.save"])
def test_resume_across_root_computations_is_bit_identical(via_torch_save):
    setting = SETTINGS[1]
    full, _ = _trained(descentlab.Shampoo, SHAPES, setting, steps=30)
    part, opt = _trained(descentlab.Shampoo, SHAPES, setting, steps=13)
    rng = torch.get_rng_state()
    state = opt.state_dict()
    if via_torch_save:
        state = saved_and_loaded(state)
    params = [p.detach().clone().requires_grad_() for p in part]
    resumed = descentlab.Shampoo(params, **setting)
    resumed.load_state_dict(state)
    torch.set_rng_state(rng)
    _steps(resumed, params, 13, 17)
    assert all(torch.equal(a, b) for a, b in zip(params, full, strict=True))


def test_layout_of_blocks_and_merged_dimensions():
    # (8, 6) in blocks of 4: merged to [1, 8, 6]; blocks (1,4,4) (1,4,2) (1,4,4) (1,4,2)
    layout = shampoo_layout((8, 6), 4, True, "all", 1, 8192, 0)
    assert layout.work_shape == (1, 8, 6)
    assert layout.sizes == (1, 4, 4, 1, 4, 2, 1, 4, 4, 1, 4, 2)
    assert layout.exponent == 6 and not layout.stacked
    # a square matrix without blocks: one stack of two statistics
    square = shampoo_layout((6, 6), 512, False, "all", 1, 8192, 0)
    assert square.sizes == (6, 6) and square.stacked and square.exponent == 4
    # whatever merges into one dimension, and 1-D tensors, are not preconditioned
    assert shampoo_layout((5, 3), 512, True, "all", 1, 8192, 0).sizes == ()
    assert shampoo_layout((7,), 512, False, "all", 1, 8192, 0).sizes == ()
    # the skip options
    assert shampoo_layout((5, 3), 512, False, "all", 3, 8192, 0).sizes == ()
    assert shampoo_layout((5, 3), 512, False, "all", 1, 4, 0).sizes == ()
    t = torch.arange(48.0).reshape(1, 8, 6)
    assert torch.equal(layout.merge(layout.blocks(t)), t)


def test_one_sided_blocks_of_one_side_but_several_shapes():
    """pre_conditioner_type="input" on (8, 6) in blocks of 4: every statistic is 4×4, but the
    blocks differ in their last dimension; the reference fails to stack them, ours computes."""
    setting = {"block_size": 4, "pre_conditioner_type": 1, "shape_interpretation": False,
               "start_preconditioning_step": 1, "preconditioning_compute_steps": 2}
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        _trained(pytorch_optimizer.ScalableShampoo, [(8, 6)], setting, steps=2)
    params, opt = _trained(descentlab.Shampoo, [(8, 6)], setting, steps=6)
    assert torch.isfinite(params[0]).all()
    assert opt.state[params[0]]["statistics_4"].shape == (4, 4, 4)  # one per block


def _spd(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(n, dtype=torch.float64)


@pytest.mark.parametrize("p", [2, 4, 6])
def test_inverse_roots_against_an_eigendecomposition(p):
    a = _spd(7)
    values, vectors = torch.linalg.eigh(a)
    exact = vectors @ torch.diag(values ** (-1.0 / p)) @ vectors.T
    torch.testing.assert_close(inverse_root_svd(a, p), exact, rtol=1e-10, atol=1e-12)
    # the coupled Newton iteration stops at a residual of 1e-3 (on A + ε λ_max I)
    approx = inverse_root_schur_newton(a, p, ridge_epsilon=0.0)
    assert (approx - exact).norm() / exact.norm() < 5e-3
    assert (torch.linalg.matrix_power(approx, p) @ a - torch.eye(7, dtype=a.dtype)).abs().max() \
        < 1e-2


#: sides where torch's bmm rounds unlike mm, or MKL's mv/mm unlike themselves at another
#: address modulo 64 bytes (odd sides in float64, 9 and 11 in float32), and 1×1 matrices
STACK_SIDES = [1, 2, 3, 5, 6, 7, 8, 9, 11, 12, 17, 20, 31, 33, 64, 65]


def _statistics(n, count, dtype, seed):
    """``count`` PSD matrices of side ``n``, of rank 1 to n and scales 1e-6 to 1 (so their
    iterations stop after different numbers of steps, some by the residual's growth)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k in range(count):
        g = torch.randn(n, 1 + (k * n) // count, generator=gen, dtype=torch.float64)
        out.append((10.0 ** (-6 * k / count)) * (g @ g.T) + 1e-6 * torch.eye(n, dtype=g.dtype))
    return torch.stack(out).to(dtype)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_stacked_roots_are_the_reference_roots_bit_for_bit(dtype, threads, monkeypatch):
    """inverse_roots_schur_newton over a stack (its power iterations and its residuals
    batched, a matrix leaving the iteration at its own step) equals the reference's
    compute_power_schur_newton matrix by matrix, bit for bit, with the starts drawn in the
    same order, on sides where batched or misaligned products would round otherwise; the
    larger sides in chunks of two matrices."""
    from pytorch_optimizer.optimizer.utils.matrix import compute_power_schur_newton, power_iteration

    from descentlab.rules import matrix_roots

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for i, n in enumerate(STACK_SIDES):
            if n > 30:
                monkeypatch.setattr(matrix_roots, "CHUNK_BYTES", 2 * n * n * dtype.itemsize)
            stack = _statistics(n, 5, dtype, seed=i)
            # λ_max alone (the ridge ελ I mostly hides its last bits from the roots)
            torch.manual_seed(i)
            starts = torch.stack([torch.randn(n, dtype=dtype) for _ in stack])
            torch.manual_seed(i)
            ref = torch.stack([power_iteration(a) for a in stack])
            assert torch.equal(matrix_roots.largest_eigenvalues(stack, starts), ref), n
            for p in (2, 3, 4, 6) if n <= 20 else (2, 4):  # matrix_power's orders
                torch.manual_seed(i)
                ours = matrix_roots.inverse_roots_schur_newton(stack, p, ridge_epsilon=1e-6)
                torch.manual_seed(i)
                ref = [compute_power_schur_newton(a, p, ridge_epsilon=1e-6) for a in stack]
                assert all(torch.equal(o, r) for o, r in zip(ours, ref, strict=True)), (n, p)
    finally:
        torch.set_num_threads(saved)


def test_names_and_codes_are_the_same_setting():
    by_code, _ = _trained(descentlab.Shampoo, SHAPES[:2], SETTINGS[1], steps=8)
    named = {**SETTINGS[1], "graft_type": "adagrad"}
    by_name, opt = _trained(descentlab.Shampoo, SHAPES[:2], named, steps=8)
    assert all(torch.equal(a, b) for a, b in zip(by_code, by_name, strict=True))
    enum = pytorch_optimizer.optimizer.utils.graft.LayerWiseGrafting.RMSPROP
    opt = descentlab.Shampoo(_params([(3, 3)]), graft_type=enum)
    assert opt.param_groups[0]["graft_type"] == "rmsprop"  # a plain value in state_dict()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("graft_type", "adam", r"graft_type must be one of 0='none', 1='sgd'.*got 'adam'"),
    ("graft_type", 7, "graft_type must be one of"),
    ("pre_conditioner_type", "rows", "pre_conditioner_type must be one of"),
    ("preconditioning_compute_steps", 0, "preconditioning_compute_steps must be an integer >= 1"),
    ("start_preconditioning_step", 2.5, "start_preconditioning_step must be an integer"),
    ("block_size", 1.5, "block_size must be an integer"),
    ("betas", (0.9, 1.0), r"betas\[1\] must be in"),
    ("matrix_eps", -1.0, "matrix_eps"),
])
def test_bad_arguments_are_refused_by_name(key, value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        descentlab.Shampoo([torch.zeros(3, 3, requires_grad=True)], **{key: value})


def test_complex_parameters_are_refused_at_construction():
    with pytest.raises(ValueError, match=r"shampoo does not support complex.*\(3, 3\)"):
        descentlab.Shampoo([torch.zeros(3, 3, dtype=torch.complex64, requires_grad=True)])


PLAIN_SETTINGS = [
    {"lr": 0.01},
    {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.1},
    {"lr": 0.01, "momentum": 0.5, "preconditioning_compute_steps": 3, "weight_decay": 0.1,
     "weight_decouple": True},
    {"lr": 0.01, "weight_decay": 0.1, "weight_decouple": True, "fixed_decay": True,
     "matrix_eps": 1e-4, "maximize": True},
]


@pytest.mark.parametrize("engine", ["reference", "flat"])
@pytest.mark.parametrize("setting", PLAIN_SETTINGS, ids=[str(i) for i in range(4)])
def test_plain_shampoo_float64_parity_with_pytorch_optimizer_over_60_steps(setting, engine):
    with float64_default():
        ours, _ = _trained(descentlab.PlainShampoo, SHAPES, setting, engine=engine)
        ref, _ = _trained(pytorch_optimizer.Shampoo, SHAPES, setting)
    assert max_rel_diff(ours, ref) <= 1e-13  # bitwise equal in our runs
    assert max_rel_diff(ours, _params(SHAPES)) > 1e-3


def test_plain_shampoo_roots_start_at_zero_as_the_reference():
    """With roots every 3 steps, the first two steps leave the parameter where it was."""
    params, opt = _trained(descentlab.PlainShampoo, [(4, 3)], {"preconditioning_compute_steps": 3},
                           steps=2)
    assert torch.equal(params[0].detach(), _params([(4, 3)])[0].detach())
    assert set(opt.state[params[0]]) == {"step", "momentum_buffer", "pre_cond_0", "pre_cond_1",
                                         "inv_pre_cond_0", "inv_pre_cond_1"}


@pytest.mark.parametrize("setting", [SETTINGS[2], SETTINGS[5]], ids=["2", "5"])
def test_stacks_of_matrices_step_with_batched_products_bitwise(setting, monkeypatch):
    """Same-shape one-block matrices (square: the stacked statistics; not square: one product
    per side), interleaved with others: with two threads the flat engine steps each stack with
    batched products and equals the reference, and the reference engine, bit for bit
    (the roots' random starts drawn in the group's order, as the reference draws them)."""
    from descentlab.rules.shampoo import ShampooRule

    stacks = []
    original = ShampooRule._step
    monkeypatch.setattr(ShampooRule, "_step",
                        lambda self, p, *a: stacks.append(tuple(p.shape)) or original(self, p, *a))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # batched from two threads on
    shapes = [(24, 20)] * 3 + [(20,), (20, 20), (20, 20), (5, 3)]
    setting = {**setting, "block_size": 32}
    with float64_default():
        ours, _ = _trained(descentlab.Shampoo, shapes, setting, steps=12, engine="flat")
        assert (3, 24, 20) in stacks and (2, 20, 20) in stacks
        alone, _ = _trained(descentlab.Shampoo, shapes, setting, steps=12, engine="reference")
        ref, _ = _trained(pytorch_optimizer.ScalableShampoo, shapes, setting, steps=12)
    assert max_rel_diff(alone, ref) == 0.0
    assert max_rel_diff(ours, ref) == 0.0


@pytest.mark.parametrize("setting", [SETTINGS[1], SETTINGS[2], SETTINGS[5]], ids=["1", "2", "5"])
def test_stacks_of_blocked_matrices_step_with_batched_products_bitwise_on_two_threads(setting):
    """Same-shape matrices cut into blocks (rows only, columns only, both; of one side: the
    stacked statistics; of uneven sides; with the work shape (1, m, n) that merging gives a
    matrix of more rows than the block), interleaved with others and with unblocked ones, on
    two torch threads: the flat engine steps each stack with batched products, block by
    block, and equals the reference bit for bit; matrices too small for bmm's BLAS call
    (other rounding) go one at a time."""
    from descentlab.rules.shampoo import ShampooRule

    shapes = [(24, 10)] * 3 + [(10,), (10, 24), (10, 24), (24, 24), (5, 3), (24, 24),
                                (20, 20), (20, 20), (12, 24), (12, 24), (6, 6), (6, 6)]
    setting = {**setting, "block_size": 12}
    merged = setting.get("shape_interpretation", True)
    layouts = [shampoo_layout(s, 12, merged, "all", 1, 8192, 0) for s in dict.fromkeys(shapes)]
    assert any(x.stacked for x in layouts)
    assert any(len(x.work_shape) == 3 for x in layouts) == merged
    stacks = []
    original = ShampooRule._step
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.MonkeyPatch.context() as patch, float64_default():
            patch.setattr(ShampooRule, "_step", lambda self, p, g, s, h, t, f, lay, ops:
                          stacks.append((tuple(p.shape), ops.__name__))
                          or original(self, p, g, s, h, t, f, lay, ops))
            ours, _ = _trained(descentlab.Shampoo, shapes, setting, steps=12, engine="flat")
        with float64_default():
            ref, _ = _trained(pytorch_optimizer.ScalableShampoo, shapes, setting, steps=12)
    finally:
        torch.set_num_threads(threads)
    batched = {shape for shape, ops in stacks if ops == "_MatrixStack"}
    assert batched == {(3, 24, 10), (2, 10, 24), (2, 20, 20), (2, 12, 24)}
    assert ((6, 6), "_OneTensor") in stacks
    assert max_rel_diff(ours, ref) == 0.0
