"""One source for the named presets: every command's names and their meaning come from it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import descentlab
from descentlab.bench.entrants import ENTRANTS, SEED_FAMILY
from descentlab.commands import demo, speed, visualize
from descentlab.optim import presets
from descentlab.optim.presets import PRESETS, resolve
from descentlab.problems.trajectory import named_optimizer


def _group(opt: torch.optim.Optimizer) -> dict:
    return {k: v for k, v in opt.param_groups[0].items() if k != "params"}


def test_presets_mean_what_the_docs_say():
    assert resolve("gd") == ("sgd", {})
    assert resolve("momentum", lr=0.1) == ("sgd", {"momentum": 0.9, "lr": 0.1})
    assert resolve("Nesterov") == ("sgd", {"momentum": 0.9, "nesterov": True})
    assert resolve("nesterov", momentum=0.5) == ("sgd", {"momentum": 0.5, "nesterov": True})
    assert resolve("adam", lr=1e-3) == ("adam", {"lr": 1e-3})
    assert PRESETS["gd"].full_batch and not PRESETS["momentum"].full_batch
    assert not set(PRESETS) & set(descentlab.available_optimizers())


def test_every_command_name_is_a_preset_or_a_registered_optimizer():
    known = {*PRESETS, *descentlab.available_optimizers()}
    used = {
        "compare": set(SEED_FAMILY),
        "visualize": {visualize.parse_optimizer_spec(spec)[0]
                      for spec in visualize.DEFAULT_OPTIMIZERS.split(",")},
        "demo": set(demo.DEFAULT_SETTINGS),
        "speed": set(speed.ALL_OPTIMIZERS),
    }
    assert {cmd: names - known for cmd, names in used.items()} == dict.fromkeys(used, set())
    assert set(PRESETS) <= used["compare"]


def test_compare_entrants_take_optimizer_flags_and_batch_from_the_presets():
    for name, preset in PRESETS.items():
        entrant = ENTRANTS[name]
        assert (entrant.optimizer, entrant.fixed, entrant.full_batch, entrant.description) == (
            preset.optimizer, dict(preset.flags), preset.full_batch, preset.description)
    # torch's Nesterov SGD, momentum tuned by compare
    assert ENTRANTS["nesterov"].hyperparameters({"lr": 0.1, "momentum": 0.8}) == {
        "nesterov": True, "lr": 0.1, "momentum": 0.8}


@pytest.fixture
def changed_momentum(monkeypatch):
    """PRESETS with ``momentum`` meaning momentum 0.5: a reader of the source sees it."""
    changed = dataclasses.replace(PRESETS["momentum"], defaults={"momentum": 0.5})
    monkeypatch.setitem(presets.PRESETS, "momentum", changed)
    return 0.5


def test_visualize_reads_the_presets(changed_momentum):
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = named_optimizer("momentum", lr=0.1)(params)
    assert isinstance(opt, descentlab.SGD) and _group(opt)["momentum"] == changed_momentum
    nesterov = _group(named_optimizer("nesterov", lr=0.1)(params))
    assert (nesterov["momentum"], nesterov["nesterov"]) == (0.9, True)


def test_demo_reads_the_presets(changed_momentum):
    def group(label: str) -> dict:
        opt = demo.make_demo_optimizer(label, [torch.nn.Parameter(torch.zeros(2))])
        assert isinstance(opt, descentlab.SGD)
        return _group(opt)

    assert group("momentum")["momentum"] == changed_momentum
    nesterov = group("nesterov")
    assert (nesterov["lr"], nesterov["momentum"], nesterov["nesterov"]) == (0.05, 0.9, True)
    assert (group("sgd")["momentum"], group("sgd")["nesterov"]) == (0, False)
