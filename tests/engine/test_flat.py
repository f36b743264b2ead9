"""The flat engine: buffers, gradient paths, idle parameters, groups, state dicts, fallbacks."""

from __future__ import annotations

import io

import pytest
import torch

import descentlab
from descentlab.engine.flat import FlatEngine
from tests.engine.helpers import RICH, ZERO_GRADS, Net, loss, rel_diff, train

OPTIMIZERS = list(RICH)


def _inside(t: torch.Tensor, flat: torch.Tensor) -> bool:
    """Whether ``t``'s memory lies in ``flat``'s, in a storage of exactly ``t``'s own size."""
    start = flat.data_ptr()
    own = t.untyped_storage().nbytes() == t.numel() * t.element_size()
    return own and start <= t.data_ptr() < start + flat.numel() * flat.element_size()


def test_parameters_gradients_and_state_live_in_one_buffer_in_slots_of_their_own():
    net = Net()
    opt = descentlab.Adam(net.parameters(), engine="flat")
    (bucket,) = opt._engine.layout(opt, opt.param_groups[0]).buckets  # laid out when built
    assert all(_inside(p, bucket.data) for p in net.parameters())
    for t in range(3):
        opt.zero_grad(set_to_none=False)
        loss(net, t).backward()
        opt.step()
    # the gradient made by the first backward moves into the flat buffer at the second step
    assert all(_inside(p.grad, bucket.grad) for p in net.parameters())
    for p in net.parameters():
        assert _inside(opt.state[p]["exp_avg"], bucket.state["exp_avg"])
    # from then on backward accumulates straight into the flat gradient
    opt.zero_grad(set_to_none=False)
    assert float(bucket.grad.abs().sum()) == 0.0
    loss(net, 2).backward()
    assert float(bucket.grad.abs().sum()) > 0


@pytest.mark.parametrize("zero_grad", [*ZERO_GRADS, "assign"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_training_matches_reference_bitwise(name, zero_grad):
    ref, ref_opt = train(name, "reference", zero_grad=zero_grad)
    flat, flat_opt = train(name, "flat", zero_grad=zero_grad)
    assert rel_diff(flat, ref) == 0.0
    ref_state, flat_state = ref_opt.state_dict()["state"], flat_opt.state_dict()["state"]
    assert ref_state.keys() == flat_state.keys()
    for i in ref_state:
        for key, value in ref_state[i].items():
            assert torch.equal(flat_state[i][key], value), (i, key)


def test_parameter_without_gradient_is_untouched_and_its_step_does_not_advance():
    net = Net()
    opt = descentlab.Adam(net.parameters(), lr=0.1, engine="flat")
    before = net.idle.detach().clone()
    for t in (1, 3):  # odd steps: idle gets no gradient
        opt.zero_grad()
        loss(net, t).backward()
        opt.step()
    assert net.idle.grad is None
    assert torch.equal(net.idle.detach(), before)
    assert net.idle not in opt.state or not opt.state[net.idle]
    opt.zero_grad()
    loss(net, 0).backward()
    opt.step()
    assert float(opt.state[net.idle]["step"]) == 1.0
    assert float(opt.state[net.gain]["step"]) == 3.0


def _fresh_loop(engine: str, add_at: int = 3, steps: int = 8) -> list[torch.Tensor]:
    torch.manual_seed(1)
    first = [torch.randn(4, 3, dtype=torch.float64, requires_grad=True)]
    later = [
        torch.randn(5, dtype=torch.float64, requires_grad=True),
        torch.randn(2, 2, dtype=torch.float64, requires_grad=True),
    ]
    opt = descentlab.NAdam(first, lr=0.05, engine=engine)
    for t in range(steps):
        if t == add_at:
            opt.add_param_group({"params": later, "lr": 0.02, "weight_decay": 0.1})
        live = first + (later if t >= add_at else [])
        opt.zero_grad()
        sum(((p - t) ** 2).sum() for p in live).backward()
        opt.step()
    return [p.detach() for p in first + later]


@pytest.mark.parametrize("engine", ["flat", "compiled"])
def test_add_param_group_matches_reference(engine):
    ref = _fresh_loop("reference")
    for a, b in zip(_fresh_loop(engine), ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)


@pytest.mark.parametrize("via_torch_save", [False, True])
@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("flat", "reference"),
        ("reference", "flat"),
        ("flat", "flat"),
        ("compiled", "reference"),
        ("reference", "compiled"),
    ],
)
def test_state_dict_moves_between_engines_with_identical_continuation(
    first, second, via_torch_save
):
    name, setting = "nadam", RICH["nadam"]
    full, _ = train(name, "reference", steps=12, setting=setting)

    net = Net()
    opt = descentlab.make_optimizer(name, net.parameters(), engine=first, **setting)
    for t in range(6):
        opt.param_groups[0]["lr"] = setting["lr"] * (1 + 0.5 * (t % 3))
        opt.zero_grad()
        loss(net, t).backward()
        opt.step()
    saved_model, saved_opt = net.state_dict(), opt.state_dict()
    if via_torch_save:
        buffer = io.BytesIO()
        torch.save((saved_model, saved_opt), buffer)
        buffer.seek(0)
        saved_model, saved_opt = torch.load(buffer)

    resumed = Net(seed=5)
    resumed.load_state_dict(saved_model)
    opt2 = descentlab.make_optimizer(name, resumed.parameters(), engine=second, **setting)
    opt2.load_state_dict(saved_opt)
    for t in range(6, 12):
        opt2.param_groups[0]["lr"] = setting["lr"] * (1 + 0.5 * (t % 3))
        opt2.zero_grad()
        loss(resumed, t).backward()
        opt2.step()
    tolerance = 0.0 if "compiled" not in (first, second) else 1e-13
    assert rel_diff(resumed, full) <= tolerance
    # the source optimizer's buffers are not aliased by the resumed one
    if second != "reference":
        for p, q in zip(net.parameters(), resumed.parameters(), strict=True):
            if p in opt.state and opt.state[p]:
                assert opt.state[p]["exp_avg"].data_ptr() != opt2.state[q]["exp_avg"].data_ptr()


def test_state_loaded_after_first_step_is_copied_into_the_buffers():
    net, opt = train("adam", "flat", steps=4)
    snapshot = {
        k: {n: v.clone() for n, v in s.items()} for k, s in opt.state_dict()["state"].items()
    }
    train_more = Net()
    opt2 = descentlab.Adam(train_more.parameters(), engine="flat", **RICH["adam"])
    loss(train_more, 0).backward()
    opt2.step()  # buffers exist before loading
    opt2.load_state_dict({"state": snapshot, "param_groups": opt.state_dict()["param_groups"]})
    for i, p in enumerate(train_more.parameters()):
        if i in snapshot:
            assert torch.equal(opt2.state[p]["exp_avg"], snapshot[i]["exp_avg"])
            assert float(opt2.state[p]["step"]) == float(snapshot[i]["step"])


def test_replaced_parameter_data_is_reattached():
    ref_net, flat_net = Net(), Net()
    ref = descentlab.SGD(ref_net.parameters(), lr=0.1, momentum=0.9, engine="reference")
    flat = descentlab.SGD(flat_net.parameters(), lr=0.1, momentum=0.9, engine="flat")
    for t in range(4):
        for net, opt in ((ref_net, ref), (flat_net, flat)):
            if t == 2:
                net.a.weight.data = net.a.weight.data.clone() * 0.5
            opt.zero_grad()
            loss(net, t).backward()
            opt.step()
    assert rel_diff(flat_net, ref_net) == 0.0


# -- per-tensor fallbacks -------------------------------------------------------------------


class Tagged(torch.Tensor):
    """A tensor subclass, standing in for DTensor and other wrappers that cannot be flattened."""


def _fallback_params() -> dict[str, list[torch.Tensor]]:
    torch.manual_seed(3)
    base = torch.randn(6, 4, dtype=torch.float64)
    shared = torch.randn(10, dtype=torch.float64)
    return {
        "non_contiguous": [base.t().requires_grad_()],
        "storage_sharing": [shared[:4].requires_grad_(), shared[4:].requires_grad_()],
        "subclass": [torch.randn(5, dtype=torch.float64).as_subclass(Tagged).requires_grad_()],
        "plain": [torch.randn(3, dtype=torch.float64, requires_grad=True)],
    }


def test_unflattenable_parameters_fall_back_to_the_reference_path():
    results = {}
    for engine in ("reference", "flat"):
        groups = _fallback_params()
        params = [p for ps in groups.values() for p in ps]
        # views of one tensor: detach them into leaves that still share storage
        opt = descentlab.Adam(params, lr=0.1, engine=engine)
        for t in range(5):
            opt.zero_grad()
            sum((p * (t + 1)).sin().sum() for p in params).backward()
            opt.step()
        results[engine] = [p.detach().clone() for p in params]
        if engine == "flat":
            layout = opt._engine.layout(opt, opt.param_groups[0])
            assert len(layout.fallback) == 4
            assert [b.params for b in layout.buckets] == [groups["plain"]]
            shared = groups["storage_sharing"]
            assert shared[0].untyped_storage().data_ptr() == shared[1].untyped_storage().data_ptr()
    for a, b in zip(results["flat"], results["reference"], strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("engine", ["flat", "compiled"])
def test_complex_parameters_share_the_real_buffer(engine):
    results = {}
    for eng in ("reference", engine):
        torch.manual_seed(4)
        z = torch.randn(3, 2, dtype=torch.complex128, requires_grad=True)
        x = torch.randn(4, dtype=torch.float64, requires_grad=True)
        opt = descentlab.Adagrad([z, x], lr=0.1, initial_accumulator_value=0.3, engine=eng)
        for t in range(6):
            opt.zero_grad()
            ((z * (1 + t)).abs().sum() + (x * z.real.sum()).sin().sum()).backward()
            opt.step()
        results[eng] = (z.detach().clone(), x.detach().clone(), opt)
    z, x, opt = results[engine]
    (bucket,) = opt._engine.layout(opt, opt.param_groups[0]).buckets
    assert bucket.dtype == torch.float64 and len(bucket.params) == 2
    torch.testing.assert_close(z, results["reference"][0], rtol=1e-13, atol=0)
    torch.testing.assert_close(x, results["reference"][1], rtol=1e-13, atol=0)


def test_sparse_gradients_are_refused_like_the_reference():
    emb = torch.nn.Embedding(10, 3, sparse=True).double()
    opt = descentlab.Adam(emb.parameters(), engine="flat")
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_engine_keyword_is_checked():
    with pytest.raises(ValueError, match="engine must be one of"):
        descentlab.Adam([torch.zeros(2, requires_grad=True)], engine="fast")
    assert descentlab.Adam([torch.zeros(2, requires_grad=True)], engine="flat").engine == "flat"
    assert isinstance(
        descentlab.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, engine="flat")._engine,
        FlatEngine,
    )


def test_model_moved_to_another_dtype_after_the_first_step_is_rebuilt():
    results = {}
    for engine in ("reference", "flat"):
        net = Net(torch.float32)
        opt = descentlab.SGD(net.parameters(), lr=0.1, momentum=0.9, engine=engine)
        for t in range(4):
            if t == 2:
                net.double()
            opt.zero_grad()
            loss(net, t).backward()
            opt.step()
        assert all(p.dtype == torch.float64 for p in net.parameters())
        results[engine] = (net, opt)
    net, opt = results["flat"]
    # the flat engine's state follows the parameters' new dtype (as load_state_dict casts it);
    # the reference keeps float32 momentum buffers, hence float32-level differences only
    assert all(
        opt.state[p]["momentum_buffer"].dtype == torch.float64
        for p in net.parameters()
        if opt.state[p]
    )
    assert rel_diff(net, results["reference"][0]) <= 1e-6


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_dtensor_parameters_are_stepped_on_their_local_shards(tmp_path):
    """A DTensor of an elementwise rule gets a flat buffer of its own (engine/shards.py)."""
    import torch.distributed as dist
    from torch.distributed.tensor import DeviceMesh, Replicate, distribute_tensor

    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path}/store")
    try:
        mesh = DeviceMesh("cpu", [0])
        results = {}
        for engine in ("reference", "flat"):
            torch.manual_seed(6)
            w = torch.nn.Parameter(
                distribute_tensor(torch.randn(4, 3, dtype=torch.float64), mesh, [Replicate()])
            )
            b = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
            opt = descentlab.Adam([w, b], lr=0.1, engine=engine)
            for t in range(4):
                opt.zero_grad()
                ((w.full_tensor() * (t + 1)).sin().sum() + (b * t).cos().sum()).backward()
                opt.step()
            results[engine] = (w.full_tensor().detach().clone(), b.detach().clone())
            if engine == "flat":
                layout = opt._engine.layout(opt, opt.param_groups[0])
                assert layout.fallback == [] and layout.shards.params == [w]
                assert layout.buckets[0].params == [b]
        for x, y in zip(results["flat"], results["reference"], strict=True):
            assert torch.equal(x, y)
    finally:
        dist.destroy_process_group()
