"""Engines run update rules over parameters; every engine must match the reference.

* ``"reference"`` — a loop over tensors, the specification (:mod:`.reference`);
* ``"flat"`` — one eager rule call per contiguous buffer (:mod:`.flat`);
* ``"compiled"`` — the flat engine with one compiled, fused kernel per buffer
  (:mod:`.compiled`);
* ``"auto"`` (default) — flat at once, compiled once a background compile is
  ready, for large buffers only (:mod:`.auto`).

The contract every engine keeps, and the :class:`Run` it is handed, are in
:mod:`.base`; tensor rules on flat buffers in :mod:`.whole`.
"""

from __future__ import annotations

from descentlab.engine.auto import AutoEngine
from descentlab.engine.base import Engine, Run, describe
from descentlab.engine.compiled import CompiledEngine
from descentlab.engine.flat import FlatEngine
from descentlab.engine.reference import ReferenceEngine

__all__ = [
    "ENGINES",
    "make_engine",
    "Engine",
    "Run",
    "describe",
    "ReferenceEngine",
    "FlatEngine",
    "CompiledEngine",
    "AutoEngine",
]

#: Engine name → factory. "auto" picks the best available engine.
ENGINES: dict[str, type[Engine]] = {
    "reference": ReferenceEngine,
    "flat": FlatEngine,
    "compiled": CompiledEngine,
    "auto": AutoEngine,
}


def make_engine(name: str) -> Engine:
    """Build the engine called ``name``; unknown names raise a ValueError listing the valid ones."""
    if not isinstance(name, str) or name not in ENGINES:
        raise ValueError(f"engine must be one of {sorted(ENGINES)}, got {name!r}")
    return ENGINES[name]()
