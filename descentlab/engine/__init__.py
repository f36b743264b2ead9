"""Engines run update rules over parameters; every engine must match the reference."""

from __future__ import annotations

from typing import Any

from descentlab.engine.reference import ReferenceEngine

__all__ = ["ENGINES", "make_engine", "ReferenceEngine"]

#: Engine name → factory. "auto" picks the best available engine.
ENGINES: dict[str, Any] = {"reference": ReferenceEngine, "auto": ReferenceEngine}


def make_engine(name: str) -> Any:
    """Build the engine called ``name``; unknown names raise a ValueError listing the valid ones."""
    if not isinstance(name, str) or name not in ENGINES:
        raise ValueError(f"engine must be one of {sorted(ENGINES)}, got {name!r}")
    return ENGINES[name]()
