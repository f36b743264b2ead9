"""Engines run update rules over parameters; every engine must match the reference."""

from __future__ import annotations

from typing import Any

from descentlab.engine.compiled import CompiledEngine
from descentlab.engine.flat import FlatEngine
from descentlab.engine.reference import ReferenceEngine

__all__ = ["ENGINES", "make_engine", "ReferenceEngine", "FlatEngine", "CompiledEngine"]

#: Engine name → factory. "auto" picks the best available engine.
ENGINES: dict[str, Any] = {
    "reference": ReferenceEngine,
    "flat": FlatEngine,
    "compiled": CompiledEngine,
    "auto": ReferenceEngine,
}


def make_engine(name: str) -> Any:
    """Build the engine called ``name``; unknown names raise a ValueError listing the valid ones."""
    if not isinstance(name, str) or name not in ENGINES:
        raise ValueError(f"engine must be one of {sorted(ENGINES)}, got {name!r}")
    return ENGINES[name]()
