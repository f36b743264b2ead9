"""Entrants: names, search spaces, and the optimizers they build (against torch.optim)."""

from __future__ import annotations

import optuna
import pytest
import torch

from descentlab.bench.entrants import ENTRANTS, SEED_FAMILY, available_entrants, get_entrant
from descentlab.wrappers import SAM, Lookahead


def test_seed_family_present() -> None:
    assert set(SEED_FAMILY) <= set(available_entrants())
    assert {"adamw", "nadam", "radam", "adamax"} <= set(available_entrants())


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'adamz'.*valid names:.*nesterov"):
        get_entrant("adamz")


@pytest.mark.parametrize("name", list(ENTRANTS))
def test_every_space_samples_within_bounds_and_builds(name: str) -> None:
    entrant = get_entrant(name)
    assert any(p.name == "lr" and p.log for p in entrant.space), "lr must be tuned, log scale"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(5):
        trial = study.ask()
        sampled = entrant.suggest(trial)
        for p in entrant.space:
            assert p.low <= sampled[p.name] <= p.high
        w = torch.nn.Parameter(torch.ones(3))
        opt = entrant.build([w], sampled)
        assert isinstance(opt, torch.optim.Optimizer)
        study.tell(trial, 0.0)


def _one_step(opt: torch.optim.Optimizer, w: torch.nn.Parameter) -> torch.Tensor:
    for _ in range(3):
        opt.zero_grad()
        (w**2 * torch.arange(1.0, 4.0)).sum().backward()
        opt.step()
    return w.detach().clone()


@pytest.mark.parametrize(
    ("name", "sampled", "reference"),
    [
        (
            "nesterov",
            {"lr": 0.1, "momentum": 0.9},
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
        ),
        (
            "adam",
            {"lr": 0.01, "beta1": 0.7},
            lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.7, 0.999)),
        ),
        (
            "rmsprop",
            {"lr": 0.01, "alpha": 0.95},
            lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.95),
        ),
    ],
)
def test_sampled_setting_maps_to_torch_arguments(name, sampled, reference) -> None:
    w1 = torch.nn.Parameter(torch.ones(3))
    w2 = torch.nn.Parameter(torch.ones(3))
    ours = _one_step(get_entrant(name).build([w1], sampled), w1)
    theirs = _one_step(reference([w2]), w2)
    torch.testing.assert_close(ours, theirs)


def test_gd_and_sgd_share_the_search_but_not_the_key() -> None:
    gd, sgd = get_entrant("gd"), get_entrant("sgd")
    assert gd.full_batch and not sgd.full_batch
    assert gd.search_hash() == sgd.search_hash()
    assert gd.space_hash() != sgd.space_hash()
    assert "lr ∈ [0.0001, 1] log" in gd.describe_space()


def _closure_steps(opt: torch.optim.Optimizer, w: torch.nn.Parameter) -> torch.Tensor:
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (w**2 * torch.arange(1.0, 4.0)).sum()
        loss.backward()
        return loss

    for _ in range(7):
        opt.step(closure)
    return w.detach().clone()


@pytest.mark.parametrize(
    ("name", "sampled", "reference"),
    [
        ("sam_sgd", {"lr": 0.1, "rho": 0.2},
         lambda p: SAM(p, torch.optim.SGD, rho=0.2, lr=0.1, momentum=0.9)),
        ("asam_sgd", {"lr": 0.1, "rho": 1.0},
         lambda p: SAM(p, torch.optim.SGD, rho=1.0, adaptive=True, lr=0.1, momentum=0.9)),
        ("sam_adamw", {"lr": 0.01, "rho": 0.1},
         lambda p: SAM(p, torch.optim.AdamW, rho=0.1, lr=0.01)),
        ("lookahead_sgd", {"lr": 0.1, "alpha": 0.3},
         lambda p: Lookahead(torch.optim.SGD(p, lr=0.1, momentum=0.9), k=5, alpha=0.3)),
        ("lookahead_adam", {"lr": 0.01, "alpha": 0.7},
         lambda p: Lookahead(torch.optim.Adam(p, lr=0.01), k=5, alpha=0.7)),
    ],
)
def test_wrapper_entrants_build_their_wrapper(name, sampled, reference) -> None:
    w1 = torch.nn.Parameter(torch.ones(3))
    w2 = torch.nn.Parameter(torch.ones(3))
    opt = get_entrant(name).build([w1], sampled)
    assert type(opt) is type(reference([torch.nn.Parameter(torch.ones(1))]))
    torch.testing.assert_close(_closure_steps(opt, w1), _closure_steps(reference([w2]), w2))
    assert not torch.equal(w1.detach(), torch.ones(3))
