"""Named presets: short names for well-known settings of a registered optimizer.

The one place that says what ``gd``, ``momentum`` and ``nesterov`` mean. Every
command that accepts optimizer names (``descentlab compare``, ``visualize``,
``demo``) takes these besides the registry's names (:mod:`descentlab.optim.registry`)
and reads their meaning from here; ``descentlab speed`` times registry names only.

=========  =========  ==========================================================
preset     optimizer  settings
=========  =========  ==========================================================
gd         sgd        full-batch steps where the data has batches
momentum   sgd        heavy-ball momentum 0.9: ``v ← μv + g``, ``θ ← θ − lr·v``
nesterov   sgd        Nesterov momentum 0.9 (torch's form): ``nesterov=True``
=========  =========  ==========================================================

A preset has *flags*, the settings that make the method what it is (fixed
wherever the name is used: Nesterov's ``nesterov=True``), and *defaults*,
starting values that a caller may override or a tuner search
(``descentlab compare`` tunes ``momentum`` in [0.5, 0.99]).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Preset", "PRESETS", "resolve"]


@dataclass(frozen=True)
class Preset:
    """A short name for a registered optimizer with some of its settings.

    Attributes:
        name: the preset's name (``"nesterov"``).
        optimizer: the registry name it stands for (``"sgd"``).
        description: one line for listings and reports.
        flags: settings that define the method; never tuned or overridden by default.
        defaults: starting values of settings a caller may change.
        full_batch: the method takes full-batch steps (gradient descent).
    """

    name: str
    optimizer: str
    description: str
    flags: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    full_batch: bool = False

    def hyperparameters(self) -> dict[str, Any]:
        """The keyword arguments the preset gives its optimizer: defaults, then flags."""
        return {**self.defaults, **self.flags}


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("gd", "sgd", "gradient descent: full-batch steps θ ← θ − lr·∇L(θ)",
               full_batch=True),
        Preset("momentum", "sgd", "SGD with heavy-ball momentum v ← μv + g, θ ← θ − lr·v",
               defaults={"momentum": 0.9}),
        Preset("nesterov", "sgd", "SGD with Nesterov momentum (torch's form)",
               flags={"nesterov": True}, defaults={"momentum": 0.9}),
    )
}
"""Every preset by name."""


def resolve(name: str, **hparams: Any) -> tuple[str, dict[str, Any]]:
    """The registry name and keyword arguments that ``name`` stands for.

    A preset name (any case) gives its optimizer and :meth:`Preset.hyperparameters`,
    updated by ``hparams``; any other name is returned as it is, with ``hparams``
    (the registry checks it when the optimizer is made).
    """
    preset = PRESETS.get(name.lower()) if isinstance(name, str) else None
    if preset is None:
        return name, dict(hparams)
    return preset.optimizer, {**preset.hyperparameters(), **hparams}
