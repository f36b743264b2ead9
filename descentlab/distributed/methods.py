"""The gradient-exchange methods the distributed benchmark compares, by name.

========================  =====================================================
name                      method
========================  =====================================================
``dense``                 torch's ``allreduce_hook`` (fp32 all-reduce, the baseline)
``fp16``                  torch's ``fp16_compress_hook``
``powersgd-R``            torch's ``powerSGD_hook``, rank ``R`` (error feedback,
                          warm start, compression from step 2)
``threshold-sign-D``      :func:`~descentlab.distributed.threshold_hook`, τ adapted
                          to density ``D``, index + sign messages
``threshold-value-D``     the same with index + value messages
``threshold-fixed-T``     a fixed τ = ``T``, index + sign messages
``topk-D``                :func:`~descentlab.distributed.topk_hook` at density ``D``
``dgc-D``                 :func:`~descentlab.distributed.dgc_hook`, final density
                          ``D``, warm-up over the first 5% of the steps
``sign``                  :func:`~descentlab.distributed.sign_hook` (EF-SignSGD)
========================  =====================================================

Our sparse hooks use Rice-coded indices and fp16 values; a suffix ``-fp8``
or ``-fp32`` on ``threshold-value-D``, ``topk-D`` and ``dgc-D`` picks that
value coding instead (``topk-0.01-fp8``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Method", "parse_method", "DEFAULT_METHODS", "QUICK_METHODS"]

_PATTERNS: dict[str, str] = {
    "dense": r"dense",
    "fp16": r"fp16",
    "powersgd": r"powersgd-(?P<rank>[1-9][0-9]*)",
    "threshold": r"threshold-(?P<message>sign|value)-(?P<density>[0-9.]+(?:e-[0-9]+)?)"
                 r"(?:-(?P<values>fp8|fp32))?",
    "threshold_fixed": r"threshold-fixed-(?P<threshold>[0-9.]+(?:e-[0-9]+)?)",
    "topk": r"topk-(?P<density>[0-9.]+(?:e-[0-9]+)?)(?:-(?P<values>fp8|fp32))?",
    "dgc": r"dgc-(?P<density>[0-9.]+(?:e-[0-9]+)?)(?:-(?P<values>fp8|fp32))?",
    "sign": r"sign",
}

#: The full benchmark's methods.
DEFAULT_METHODS: tuple[str, ...] = (
    "dense", "fp16", "powersgd-1", "powersgd-2", "powersgd-4",
    "threshold-sign-0.01", "threshold-sign-0.003", "threshold-value-0.01",
    "topk-0.01", "topk-0.003", "dgc-0.02-fp8", "dgc-0.01", "dgc-0.01-fp8", "dgc-0.005",
    "dgc-0.005-fp8", "dgc-0.001", "sign",
)
#: ``--quick``: one of each kind.
QUICK_METHODS: tuple[str, ...] = (
    "dense", "fp16", "powersgd-1", "threshold-sign-0.01", "threshold-value-0.01", "topk-0.01",
    "dgc-0.01", "sign",
)


@dataclass(frozen=True)
class Method:
    """One named method: its kind (``dense``, ``topk``, …) and options."""

    name: str
    kind: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def ours(self) -> bool:
        """Whether the hook is descentlab's (else torch's)."""
        return self.kind not in ("dense", "fp16", "powersgd")

    @property
    def hook_momentum(self) -> bool:
        """Whether the hook applies the momentum itself (DGC), so the optimizer must not."""
        return self.kind == "dgc"

    def build(self, steps: int) -> tuple[Any, Any]:
        """``(state, hook)`` for ``ddp.register_comm_hook`` in a run of ``steps`` steps."""
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

        import descentlab.distributed as D

        o = dict(self.options)
        values = {"value_coding": o["values"]} if "values" in o else {}
        if self.kind == "dense":
            return None, default_hooks.allreduce_hook
        if self.kind == "fp16":
            return None, default_hooks.fp16_compress_hook
        if self.kind == "powersgd":
            state = powerSGD_hook.PowerSGDState(
                process_group=None, matrix_approximation_rank=o["rank"], start_powerSGD_iter=2,
                use_error_feedback=True, warm_start=True, random_seed=0)
            return state, powerSGD_hook.powerSGD_hook
        if self.kind == "threshold":
            return D.ThresholdState(density=o["density"], message=o["message"], **values), \
                D.threshold_hook
        if self.kind == "threshold_fixed":
            return D.ThresholdState(threshold=o["threshold"]), D.threshold_hook
        if self.kind == "topk":
            return D.TopKState(density=o["density"], **values), D.topk_hook
        if self.kind == "dgc":
            return D.DGCState(density=o["density"], warmup_steps=steps // 20, **values), \
                D.dgc_hook
        return D.SignState(), D.sign_hook


def parse_method(name: str) -> Method:
    """The :class:`Method` called ``name`` (see the module docstring); ``ValueError`` if unknown."""
    for kind, pattern in _PATTERNS.items():
        match = re.fullmatch(pattern, name)
        if match is None:
            continue
        options: dict[str, Any] = {}
        for key, text in match.groupdict().items():
            if text is None:
                continue
            if key in ("message", "values"):
                options[key] = text
            elif key == "rank":
                options[key] = int(text)
            else:
                try:
                    options[key] = float(text)
                except ValueError:
                    raise ValueError(f"method {name!r}: {key} {text!r} is not a number") from None
        if "density" in options and not 0 < options["density"] <= 1:
            raise ValueError(f"method {name!r}: density must lie in (0, 1], got {text}")
        if "threshold" in options and not options["threshold"] > 0:
            raise ValueError(f"method {name!r}: threshold must be > 0, got {text}")
        return Method(name, kind, tuple(sorted(options.items())))
    forms = "dense, fp16, powersgd-R, threshold-sign-D, threshold-value-D, threshold-fixed-T, " \
            "topk-D, dgc-D, sign"
    raise ValueError(f"unknown method {name!r}; the forms are: {forms}")
