"""Sparse gradients (``nn.Embedding(sparse=True)``): SGD, Adagrad and SparseAdam, as in torch.

Each optimizer is run beside its torch.optim counterpart in float64 on an
embedding whose batches repeat indices (so gradients arrive uncoalesced) and,
for SGD and Adagrad, a dense layer in the same parameter group (so the flat
engines step sparse and dense parameters side by side).
"""

from __future__ import annotations

import copy
import io

import pytest
import torch

import descentlab
from tests.copies import HOWS, copy_by
from tests.optim.engines import ENGINES_UNDER_TEST
from tests.optim.helpers import max_rel_diff
from tests.optim.infos import INFOS, SPARSE_INFOS

ENGINES = [*ENGINES_UNDER_TEST, "auto"]
CASES = [(info, s) for info in SPARSE_INFOS for s in info.settings]
CASE_IDS = ["-".join([i.name] + [f"{k}={v}" for k, v in s.items()]) for i, s in CASES]


class Model(torch.nn.Module):
    """An embedding with sparse gradients, and (``dense=True``) a linear read-out after it."""

    def __init__(self, dense: bool) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Embedding(
            12, 4, sparse=True, _weight=torch.randn(12, 4, generator=gen, dtype=torch.float64)
        )
        self.out = torch.nn.Linear(4, 1).double() if dense else None
        if dense:
            with torch.no_grad():
                self.out.weight.copy_(torch.randn(1, 4, generator=gen, dtype=torch.float64))
                self.out.bias.fill_(0.1)

    def loss(self, step: int, sign: float) -> torch.Tensor:
        gen = torch.Generator().manual_seed(100 + step)
        idx = torch.randint(0, 12, (6,), generator=gen)
        idx[1] = idx[0]  # a repeated index: an uncoalesced sparse gradient
        h = self.emb(idx)
        y = self.out(torch.tanh(h)) if self.out is not None else h.sum(1, keepdim=True)
        return sign * (y - 0.5).pow(2).mean()


def run(cls, setting, steps=40, model=None, **extra):
    sign = -1.0 if setting.get("maximize") else 1.0
    model = model or Model(dense=cls.__name__ != "SparseAdam")
    opt = cls(model.parameters(), **setting, **extra)
    for t in range(steps):
        opt.zero_grad()
        model.loss(t, sign).backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_sparse_gradients_match_torch(case, engine):
    info, setting = case
    ours, opt = run(info.ours, setting, engine=engine)
    theirs, _ = run(info.torch_cls, setting)
    assert ours.emb.weight.grad.is_sparse
    assert max_rel_diff(list(ours.parameters()), list(theirs.parameters())) <= 1e-12
    assert not torch.equal(ours.emb.weight, Model(dense=False).emb.weight)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("info", SPARSE_INFOS[:2], ids=["sgd", "adagrad"])
def test_a_sparse_gradient_steps_like_its_dense_equivalent(info, engine):
    """torch's rosenbrock-sparse check: a sparse update equals the dense one on the same values."""
    setting = info.settings[-1]
    results = []
    for sparse in (True, False):
        x = torch.tensor([1.5, 1.5], dtype=torch.float64, requires_grad=True)
        opt = info.ours([x], **setting, engine=engine)
        for i in range(60):
            w = i % 2
            g = torch.stack([-400 * x[0] * (x[1] - x[0] ** 2) - 2 * (1 - x[0]),
                             200 * (x[1] - x[0] ** 2)]).detach()
            vals = torch.stack([g[w] / 4, g[w] - g[w] / 4])
            where = torch.tensor([[w, w]])
            coo = torch.sparse_coo_tensor(where, vals, (2,), check_invariants=False)
            x.grad = coo if sparse else coo.to_dense()
            opt.step()
        results.append(x.detach().clone())
    assert max_rel_diff([results[0]], [results[1]]) <= 1e-12


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("cls", [descentlab.SGD, descentlab.Adagrad], ids=["sgd", "adagrad"])
def test_weight_decay_with_sparse_gradients_is_refused_before_any_change(cls, engine):
    model = Model(dense=False)
    opt = cls(model.parameters(), lr=0.1, weight_decay=0.1, engine=engine)
    before = model.emb.weight.detach().clone()
    model.loss(0, 1.0).backward()
    with pytest.raises(RuntimeError, match=r"weight_decay .*not compatible with sparse gradients"):
        opt.step()
    assert torch.equal(model.emb.weight.detach(), before)
    assert not opt.state[model.emb.weight]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("info", [i for i in INFOS if i.name not in ("sgd", "adagrad")],
                         ids=lambda i: i.name)
def test_other_optimizers_refuse_sparse_gradients_as_in_torch(info, engine):
    model = Model(dense=False)
    opt = info.ours(model.parameters(), engine=engine)
    model.loss(0, 1.0).backward()
    with pytest.raises(RuntimeError, match=rf"{info.ours.rule.name} does not support sparse"):
        opt.step()
    with pytest.raises(RuntimeError, match=r"does not support sparse"):
        info.torch_cls(model.parameters()).step()


def test_sparse_adam_refuses_dense_gradients_and_dense_only_inputs_as_in_torch():
    x = torch.zeros(3, requires_grad=True)
    opt = descentlab.SparseAdam([x])
    x.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match=r"does not support dense gradients"):
        opt.step()
    assert not opt.state[x]
    with pytest.raises(ValueError, match=r"requires dense parameter tensors"):
        descentlab.SparseAdam([torch.zeros(3, layout=torch.sparse_coo)])
    with pytest.raises(ValueError, match=r"requires dense parameter tensors"):
        descentlab.SparseAdam([{"params": [torch.zeros(3, layout=torch.sparse_coo)]}])
    with pytest.raises(ValueError, match=r"does not support complex parameters"):
        descentlab.SparseAdam([torch.zeros(2, dtype=torch.complex64, requires_grad=True)])
    with pytest.raises(ValueError, match=r"betas\[0\] must be in"):
        descentlab.SparseAdam(None, lr=1e-2, betas=(1.0, 0.0))
    with pytest.raises(TypeError, match=r"foreach"):
        descentlab.SparseAdam([x], foreach=True)  # torch's SparseAdam takes no such switch


def _round_trip(state_dict):
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("engine", ENGINES_UNDER_TEST)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_sparse_checkpoints_move_both_ways(case, engine):
    """Saved after 20 steps by one library, continued 30 steps by the other: as by the first."""
    info, setting = case
    directions = [(info.torch_cls, info.ours, {}, {"engine": engine})]
    if not setting.get("nesterov"):
        # torch keeps SGD's momentum buffer sparse under sparse gradients and cannot add our
        # dense one to a sparse gradient in its Nesterov step (grad.add(buf): sparse + dense)
        directions.append((info.ours, info.torch_cls, {"engine": engine}, {}))
    for first, second, extra1, extra2 in directions:
        model, opt = run(first, setting, steps=20, **extra1)
        saved = _round_trip(opt.state_dict())
        twin = copy.deepcopy(model)
        resumed = second(twin.parameters(), **setting, **extra2)
        resumed.load_state_dict(saved)
        sign = -1.0 if setting.get("maximize") else 1.0
        for t in range(20, 50):
            for m, o in ((model, opt), (twin, resumed)):
                o.zero_grad()
                m.loss(t, sign).backward()
                o.step()
        assert max_rel_diff(list(twin.parameters()), list(model.parameters())) <= 1e-12


@pytest.mark.parametrize("how", HOWS)
def test_sparse_adam_copies_continue_the_same(how):
    model, opt = run(descentlab.SparseAdam, {"lr": 0.01}, steps=5)
    twin_model, twin = copy_by((model, opt), how)
    for t in range(5, 10):
        for m, o in ((twin_model, twin), (model, opt)):
            o.zero_grad()
            m.loss(t, 1.0).backward()
            o.step()
    assert torch.equal(model.emb.weight, twin_model.emb.weight)
    assert model.emb.weight is not twin_model.emb.weight


def test_sparse_adam_is_registered():
    assert "sparse_adam" in descentlab.available_optimizers()
    opt = descentlab.make_optimizer("sparse_adam", [torch.zeros(2, requires_grad=True)], lr=0.1)
    assert isinstance(opt, descentlab.SparseAdam) and opt.engine == "reference"
