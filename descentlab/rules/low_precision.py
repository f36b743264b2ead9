"""Low-precision optimizer state: one storage layer around any elementwise rule.

``state_precision`` (a structural hyperparameter of the rules that declare
:data:`STATE_PRECISION`: Adam, AdamW, NAdam, RAdam, Lion, SGD) chooses how
the rule's per-parameter buffers (moments, momentum) are *stored*:

``"full"`` (default)
    in the parameter's dtype, exactly as torch.optim: the plain rule runs,
    bit for bit as without the option.
``"bf16"``
    in bfloat16, 2 bytes per value, rounded stochastically after each update
    (:func:`~descentlab.rules.state_codecs.stochastic_round_bf16`); the
    random bits come from a seed kept per parameter (``rounding_seed``, drawn
    from torch's global generator when the state is created) and the step
    number, so a resumed run is bit-identical.
``"8bit"``
    blockwise 8-bit codes, 1 byte per value plus one float32 absmax per
    block of 256 (:func:`~descentlab.rules.state_codecs.quantise_blockwise`;
    the signed dynamic map for moments that may be negative, the unsigned
    one for those the rule declares non-negative, :attr:`Rule.nonnegative_state`).
    Parameters of fewer than :data:`MIN_8BIT_SIZE` elements (biases,
    normalisation scales) keep full-precision state, as bitsandbytes'
    ``min_8bit_size`` and torchao's 8-bit optimizers do: their state is a
    negligible share of the memory, and a per-block absmax over a handful of
    values gains nothing.

Each step a parameter's state is decoded into float32 (float64 for float64
parameters), the unchanged elementwise rule updates it and the parameter
(a bfloat16 or float16 parameter is updated through a float32 copy and
rounded back to its own dtype), and the state is encoded again. Only the
stored form changes; the algorithm is the rule's.

**Where it sits in the design.** The storage layer is a
:class:`~descentlab.rules.base.TensorRule` wrapping the group's elementwise
rule (:func:`with_state_precision`; the shell's ``rule_for`` returns it for
a group whose ``state_precision`` is not ``"full"``), rather than a second
state format inside every engine: one mechanism for every elementwise rule,
and the engines need nothing new. A tensor rule because the 8-bit blocks
and the rounding seed are per parameter: blocks that ran across a flat
buffer would tie a parameter's state to its neighbours (``state_dict()``
must stay per parameter) and the random bits would depend on the buffer
layout, so the engines would disagree. Every engine therefore steps such a
group parameter by parameter (the flat engines on their views of the flat
parameter and gradient buffers) and gives the reference engine's bits; no
engine compiles it.

State entries (per parameter, in ``optimizer.state[p]`` and ``state_dict()``):
``"bf16"`` keeps each buffer under its usual key as a bfloat16 tensor, plus
``rounding_seed`` (int64); ``"8bit"`` keeps ``<key>_codes`` (uint8, the
parameter's shape) and ``<key>_absmax`` (float32, one per block).
``load_state_dict`` converts a checkpoint of any precision into the group's
(:func:`adopt_loaded_state`): an 8-bit checkpoint loads into a full-precision
optimizer and the other way round.

Refused, with a ValueError naming the argument: an unknown value, complex
parameters (no complex codes), sparse gradients, and ``state_precision`` on a
rule that does not declare it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, MutableMapping
from typing import Any

import torch
from torch import Tensor

from descentlab.rules.base import (
    STRUCTURAL,
    Flags,
    HParam,
    Rule,
    Scalar,
    WrappedRule,
    unsupported_option,
)
from descentlab.rules.state_codecs import (
    dequantise_blockwise,
    quantise_blockwise,
    step_generator,
    stochastic_round_bf16,
)
from descentlab.validation import one_of

__all__ = [
    "PRECISIONS",
    "STATE_PRECISION",
    "MIN_8BIT_SIZE",
    "LowPrecisionState",
    "with_state_precision",
    "declares_state_precision",
    "adopt_loaded_state",
    "state_bytes",
]

#: The values of ``state_precision``.
PRECISIONS = ("full", "bf16", "8bit")
#: The declaration the rules that offer the option add to their ``hparams``.
STATE_PRECISION = HParam(
    "state_precision", "full", STRUCTURAL, check=one_of(PRECISIONS),
    doc="state storage: full (the parameter's dtype), bf16 (stochastic rounding) or 8bit",
)
#: Smallest parameter (in elements) whose state is stored in 8 bits.
MIN_8BIT_SIZE = 4096
_SEED = "rounding_seed"
_CODES, _ABSMAX = "_codes", "_absmax"


def declares_state_precision(rule: Rule) -> bool:
    """Whether ``rule`` offers ``state_precision`` (declares :data:`STATE_PRECISION`)."""
    return any(hp.name == STATE_PRECISION.name for hp in rule.hparams)


def _form(precision: str, param: Tensor) -> str:
    """How ``param``'s buffers are stored under ``precision``: full, bf16 or 8bit."""
    if precision == "8bit" and param.numel() < MIN_8BIT_SIZE:
        return "full"
    return precision


def _work_dtype(param: Tensor) -> torch.dtype:
    return torch.float64 if param.dtype == torch.float64 else torch.float32


def _buffer_keys(rule: Rule, state: Mapping[str, Any]) -> list[str]:
    """The rule's own buffer keys found in ``state``, whatever their stored form."""
    keys = []
    for key in state:
        if (key == "step" or key == _SEED or key in rule.scalar_state or key.endswith(_ABSMAX)
                or not isinstance(state[key], Tensor)):  # torch's SGD may keep a None buffer
            continue
        keys.append(key[: -len(_CODES)] if key.endswith(_CODES) else key)
    return keys


def _decode(rule: Rule, state: Mapping[str, Any], key: str, dtype: torch.dtype) -> Tensor:
    """Buffer ``key`` of ``state`` in ``dtype``, from whichever form it is stored in."""
    if key + _CODES in state:
        signed = key not in rule.nonnegative_state
        return dequantise_blockwise(state[key + _CODES], state[key + _ABSMAX], signed, dtype)
    return state[key].to(dtype, copy=True)


def _encode(
    rule: Rule, state: MutableMapping[str, Any], key: str, value: Tensor, form: str,
    param: Tensor, generator: torch.Generator | None,
) -> None:
    """Store ``value`` as buffer ``key`` of ``state`` in ``form``, in place where it can be."""
    if form == "8bit":
        signed = key not in rule.nonnegative_state
        stored = (state[key + _CODES], state[key + _ABSMAX]) if key + _CODES in state else None
        if stored is not None and all(t.is_contiguous() for t in stored):
            quantise_blockwise(value, signed, out=stored)  # in place: no copy of the codes
            return
        codes, absmax = quantise_blockwise(value, signed)
        if stored is not None:
            stored[0].copy_(codes)
            stored[1].copy_(absmax)
        else:
            state.pop(key, None)
            state[key + _CODES], state[key + _ABSMAX] = codes, absmax
        return
    if form == "bf16":
        stored = (stochastic_round_bf16(value, generator) if generator is not None
                  else value.to(torch.bfloat16))
    else:
        stored = value.to(param.dtype)
    state.pop(key + _CODES, None)
    state.pop(key + _ABSMAX, None)
    current = state.get(key)
    if isinstance(current, Tensor) and current.dtype == stored.dtype:
        current.copy_(stored)
    else:
        state[key] = stored


def _new_seed(device: torch.device) -> Tensor:
    return torch.randint(0, 1 << 62, (), dtype=torch.int64).to(device)


class LowPrecisionState(WrappedRule):
    """An elementwise rule with its buffers stored in ``precision`` (see the module docstring).

    Its declarations, checks, flags and scalars are the wrapped rule's; it
    adds nothing to the algorithm.
    """

    def __init__(self, inner: Rule, precision: str) -> None:
        if precision not in PRECISIONS[1:]:
            raise ValueError(f"state_precision must be one of {PRECISIONS[1:]}, got {precision!r}")
        super().__init__(inner)
        self.precision = precision

    def check_param(self, param: Tensor, group: Mapping[str, Any]) -> None:
        """Refuse complex parameters (the codecs have no complex form)."""
        if param.is_complex():
            raise ValueError(
                f"state_precision={self.precision!r} does not support complex parameters (got "
                f"one of shape {tuple(param.shape)}, {param.dtype}); use state_precision='full' "
                "for its group, or optimize its real view (torch.view_as_real)"
            )

    def check_sparse(self, flags: Flags) -> None:
        """Sparse gradients are refused (their rules update the stored buffers in place)."""
        raise RuntimeError(
            f"{self.name} with state_precision={self.precision!r} does not support sparse "
            "gradients; use state_precision='full' for the sparse parameters' group"
        )

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        """The wrapped rule's fresh state, stored in this precision (plus the rounding seed)."""
        state: dict[str, Any] = dict(self.inner.init_state(param, flags, h))
        form = _form(self.precision, param)
        if form == "bf16":
            state[_SEED] = _new_seed(param.device)
        for key in _buffer_keys(self, state):
            _encode(self, state, key, state[key], form, param, None)
        return state

    def update(self, param, grad, state, h, step, flags) -> None:
        """Decode the buffers, run the wrapped rule in float32 (or float64), encode them again."""
        form = _form(self.precision, param)
        dtype = _work_dtype(param)
        keys = _buffer_keys(self, state)
        work = {key: _decode(self, state, key, dtype) for key in keys}
        work.update({key: state[key] for key in self.scalar_state if key in state})
        target = param if param.dtype == dtype else param.to(dtype)
        self.inner.update(target, grad.to(dtype), work, h, float(step), flags)
        if target is not param:
            param.copy_(target)
        generator = None
        if form == "bf16":
            generator = step_generator(int(state[_SEED]), int(step), param.device)
        for key in keys:
            _encode(self, state, key, work[key], form, param, generator)


@functools.cache
def with_state_precision(rule: Rule, precision: str) -> Rule:
    """``rule`` with its state stored in ``precision`` (``rule`` itself for ``"full"``)."""
    if precision == "full":
        return rule
    if not declares_state_precision(rule):
        raise unsupported_option(rule, f"state_precision={precision!r}", STATE_PRECISION)
    return LowPrecisionState(rule, precision)


def adopt_loaded_state(
    rule: Rule, group: Mapping[str, Any], param: Tensor, state: MutableMapping[str, Any],
    saved: Mapping[str, Any],
) -> None:
    """Bring a freshly loaded parameter state into the form ``group["state_precision"]`` asks.

    torch's ``load_state_dict`` casts floating state to the parameter's dtype;
    entries saved in another dtype (bfloat16 buffers, float32 absmax) are
    first restored from ``saved`` as they were. A buffer already in the
    group's form is left as loaded (a resumed run continues bit for bit);
    one in another form is decoded and encoded again (rounded to nearest).
    """
    for key, value in saved.items():
        if (key != "step" and key not in rule.scalar_state and isinstance(value, Tensor)
                and key in state and state[key].dtype != value.dtype):
            state[key] = value.detach().to(param.device, copy=True)
    form = _form(group.get(STATE_PRECISION.name, "full"), param)
    if form == "bf16" and _SEED not in state:
        state[_SEED] = _new_seed(param.device)
    if form != "bf16":
        state.pop(_SEED, None)
    dtype = _work_dtype(param)
    for key in _buffer_keys(rule, state):
        stored = ("8bit" if key + _CODES in state
                  else "bf16" if state[key].dtype == torch.bfloat16 and _SEED in state
                  else "full" if state[key].dtype == param.dtype else None)
        if stored != form:
            _encode(rule, state, key, _decode(rule, state, key, dtype), form, param, None)


def state_bytes(state: Mapping[str, Any]) -> int:
    """Bytes held by the tensors of one parameter's state (codes, scales, buffers, counters)."""
    return sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, Tensor))
