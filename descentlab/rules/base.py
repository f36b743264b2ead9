"""The rule interface: an algorithm's hyperparameters, state and update, written like its equations.

A :class:`Rule` is the specification of an algorithm. It declares

* its **kind** (:data:`ELEMENTWISE` or :data:`TENSOR`), which decides how
  engines may run it (below);
* its **hyperparameters**, once (:class:`HParam`: name, default, whether the
  value is a *scalar* that may change every step — ``lr``, ``betas`` — or
  *structural*, a Python value fixed before a step — ``amsgrad``,
  ``nesterov``); the optimizer's ``defaults``, argument checks, the scalars
  and flags handed to the update, the values filled in for keys an older
  checkpoint lacks, and ``descentlab list`` all derive from this
  declaration;
* the *flags* of a group (structural choices, possibly derived: "weight decay
  is on", "momentum is on") and the per-parameter *state* it keeps, created
  lazily;
* the *update* itself.

**Elementwise rules** (kind :data:`ELEMENTWISE`) compute each coordinate of
the new parameter and state from the same coordinate of the old ones and the
gradient, with scalars that do not depend on the tensor's values (no norms,
reductions, reshapes, matmuls). That is what lets engines run them on a flat
run of several parameters, cut into chunks, or compile them into one fused
kernel. ``update`` is written once, with Python operators and in-place tensor
methods that accept either Python floats or 0-dim tensors as scalars, so the
same code runs per tensor (the reference engine, scalars as floats), on flat
buffers, or compiled by ``torch.compile`` with scalars as 0-dim tensors (so a
changed learning rate never recompiles).

**Tensor rules** (kind :data:`TENSOR`, base class :class:`TensorRule`) see
each parameter whole, in its own shape: state of any shape, reductions,
matmuls, and branches on the step taken on the host (the step is a Python
int). With :attr:`TensorRule.batched` set, ``update`` receives a batch of
same-shape parameters stacked along a new leading dimension ``[B, *shape]``
(gradients and state stacked alike; B = 1 for a lone parameter), which lets
engines replace B small calls by one batched call (``torch.bmm``). A tensor
rule refuses, at construction, parameters it cannot handle
(:meth:`TensorRule.check_param`). Engines never hand a tensor rule a flat run,
and never compile one into an elementwise kernel.

Rules never look at ``maximize`` (the engine negates the gradient first) nor
at the step counter's storage (the engine passes the 1-based step number).

Sparse gradients (``nn.Embedding(sparse=True)``) are not elementwise work on a
flat buffer: a rule that takes them sets :attr:`Rule.sparse` and implements
:meth:`Rule.sparse_update`, which every engine runs per tensor, on the
parameter as it is (complex parameters are not viewed as real, as in
torch.optim's sparse paths).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

__all__ = [
    "ELEMENTWISE",
    "TENSOR",
    "GLOBAL",
    "SCALAR",
    "STRUCTURAL",
    "HParam",
    "Rule",
    "TensorRule",
    "WrappedRule",
    "unsupported_option",
    "Scalar",
    "Flags",
    "weight_decay_mode",
    "apply_weight_decay",
    "where",
    "at_entries",
]

#: Rule kinds (see the module docstring).
ELEMENTWISE = "elementwise"
TENSOR = "tensor"
#: A rule stepping all groups at once around global sums (:mod:`descentlab.rules.reduction`).
GLOBAL = "global"
#: Hyperparameter kinds: a number the update reads as a scalar, or a structural Python value.
SCALAR = "scalar"
STRUCTURAL = "structural"

#: A hyperparameter as the update sees it: a Python float or a 0-dim tensor.
Scalar = float | Tensor
#: Structural options of a parameter group (hashable values only).
Flags = Mapping[str, Any]


@dataclass(frozen=True)
class HParam:
    """One declared hyperparameter of a rule.

    Attributes:
        name: the key in a parameter group (torch.optim's argument name).
        default: its value when not given.
        kind: :data:`SCALAR` (a number, or a tuple of numbers, read as floats
            into the update's ``h`` and passed to compiled kernels as 0-dim
            tensors, so changing it never recompiles) or :data:`STRUCTURAL`
            (a Python value that shapes the computation; read by
            :meth:`Rule.flags`).
        check: ``check(name, value)`` raises a ValueError/TypeError naming the
            argument and the value (see :mod:`descentlab.validation`).
        doc: a few words for listings (``descentlab list``).
        split: for a tuple-valued scalar, the names its entries take in ``h``
            (``betas`` → ``("beta1", "beta2")``).
    """

    name: str
    default: Any
    kind: str = SCALAR
    check: Callable[[str, Any], Any] | None = None
    doc: str = ""
    split: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in (SCALAR, STRUCTURAL):
            raise ValueError(f"HParam kind must be {SCALAR!r} or {STRUCTURAL!r}, got {self.kind!r}")

    def scalars(self, value: Any) -> dict[str, float]:
        """The entries this hyperparameter contributes to the update's ``h``."""
        if self.split:
            return {k: float(v) for k, v in zip(self.split, value, strict=True)}
        return {self.name: float(value)}


class Rule:
    """Base class of an update rule (see the module docstring); elementwise unless declared.

    Subclasses set :attr:`name` and :attr:`hparams` and implement
    :meth:`init_state` and :meth:`update`; :meth:`flags` (default: the
    structural hyperparameters as given) and :meth:`check` (default: each
    declared check) are refined where a rule derives flags or checks several
    arguments together. :attr:`scalar_state` names state entries that are
    0-dim bookkeeping values (not elementwise buffers); they keep their own
    dtype when a state dict is loaded. :attr:`nonnegative_state` names
    buffers that are never negative.
    """

    kind: ClassVar[str] = ELEMENTWISE
    #: The rule's registry name (``group["rule"]`` refers to it); variants get their own.
    name: str = ""
    #: The declared hyperparameters, in the order of the torch.optim signature.
    hparams: tuple[HParam, ...] = ()
    scalar_state: ClassVar[tuple[str, ...]] = ()
    #: State buffers that are never negative (second moments): low-precision storage
    #: (:mod:`descentlab.rules.low_precision`) gives them an unsigned code map.
    nonnegative_state: ClassVar[tuple[str, ...]] = ()
    #: Whether :meth:`sparse_update` takes sparse (COO) gradients.
    sparse: ClassVar[bool] = False

    # -- declarations --------------------------------------------------------------------

    def variant(self, name: str, **defaults: Any) -> Rule:
        """The same rule under another ``name`` with other declared defaults (AdamW of Adam)."""
        known = {hp.name for hp in self.hparams}
        unknown = sorted(set(defaults) - known)
        if unknown:
            raise ValueError(f"{self.name} declares no hyperparameter {unknown[0]!r}")
        other = copy.copy(self)
        other.name = name
        other.hparams = tuple(
            HParam(hp.name, defaults.get(hp.name, hp.default), hp.kind, hp.check, hp.doc, hp.split)
            for hp in self.hparams
        )
        return other

    def defaults(self) -> dict[str, Any]:
        """Declared name → default, in declaration order."""
        return {hp.name: hp.default for hp in self.hparams}

    def check(self, group: Mapping[str, Any]) -> None:
        """Validate a group's hyperparameters (each declared check); rules add joint checks."""
        for hp in self.hparams:
            if hp.check is not None:
                hp.check(hp.name, group[hp.name])

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        """Structural options read from a parameter group (default: the structural hparams)."""
        return {hp.name: group[hp.name] for hp in self.hparams if hp.kind == STRUCTURAL}

    def scalars(self, group: Mapping[str, Any]) -> dict[str, float]:
        """Numeric hyperparameters of a group as floats (from the declared scalars)."""
        out: dict[str, float] = {}
        for hp in self.hparams:
            if hp.kind == SCALAR:
                out.update(hp.scalars(group[hp.name]))
        return out

    # -- state and update ----------------------------------------------------------------

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        """Fresh state for ``param`` (without the step counter, which the engine keeps)."""
        return {}

    def update(
        self,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        h: Mapping[str, Scalar],
        step: Scalar,
        flags: Flags,
    ) -> None:
        """Apply one step in place to ``param`` and ``state``.

        ``grad`` is the gradient of the objective to *minimise* (already negated
        under ``maximize``); ``step`` is the 1-based step number; ``h`` holds the
        scalars of :meth:`scalars`; ``flags`` those of :meth:`flags`. State is
        updated in place (entries are never replaced by new tensors).
        """
        raise NotImplementedError

    def check_sparse(self, flags: Flags) -> None:
        """Raise a RuntimeError if a group with these ``flags`` cannot take a sparse gradient.

        Called before the state is touched; the default refuses unless
        :attr:`sparse` is set. Rules refine it for options torch.optim refuses
        with sparse gradients (weight decay).
        """
        if not self.sparse:
            raise RuntimeError(
                f"{self.name} does not support sparse gradients; use descentlab.SparseAdam "
                "(or SGD, Adagrad) or a dense embedding"
            )

    def check_dense(self) -> None:
        """Raise a RuntimeError if this rule cannot take a dense gradient (default: it can)."""

    def sparse_update(
        self,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        h: Mapping[str, Scalar],
        step: float,
        flags: Flags,
    ) -> None:
        """One step with a sparse COO ``grad`` (already negated under ``maximize``), per tensor."""
        raise NotImplementedError


class TensorRule(Rule):
    """Base class of a rule that sees each parameter whole (see the module docstring).

    ``update(param, grad, state, h, step, flags)`` receives the parameter in
    its own shape — or, with :attr:`batched`, a stack ``[B, *shape]`` of
    same-shape parameters with their gradients and state stacked the same way
    (B = 1 for a lone parameter). ``step`` is a Python int and ``h`` holds
    Python floats, so the rule may branch on them on the host. State entries
    may have any shape; entries shaped like the parameter are kept in the
    flat engines' buffers (so a batch of neighbouring parameters is one strided
    view, without copies), others per parameter — and so are the entries
    :meth:`keeps_layout` names, whatever their shape.
    """

    kind: ClassVar[str] = TENSOR
    #: Whether :meth:`update` takes a stack of same-shape parameters (leading batch dimension).
    batched: ClassVar[bool] = False
    #: Whether the results do not depend on the order in which parameters are stepped. A
    #: rule that draws from torch's global generator (Shampoo's power iterations) sets it
    #: False: the flat engines then batch only neighbours, keeping the group's order.
    in_any_order: ClassVar[bool] = True
    #: Whether :meth:`update` gives the same bits on any number of torch threads (no LAPACK
    #: call, no reduction that torch splits over threads). Only then may the flat engines
    #: step a stack on one thread when that is faster (``engine/whole.py``); the
    #: conformance suite checks the claim (``tests/engine/test_small_stacks.py``).
    same_bits_on_any_thread_count: ClassVar[bool] = False

    def keeps_layout(self, key: str) -> bool:
        """Whether state entry ``key`` stays per parameter in the memory layout ``init_state``
        gave it (e.g. a column-major basis, as LAPACK returns it), never in a flat buffer's
        row-major slot, even when it is shaped like the parameter. Default: no entry."""
        return False

    def check_param(self, param: Tensor, group: Mapping[str, Any]) -> None:
        """Refuse, at construction, a parameter this rule cannot handle (ValueError naming it).

        The default refuses complex parameters; rules add their shape rules.
        """
        if param.is_complex():
            raise ValueError(
                f"{self.name} does not support complex parameters (got one of shape "
                f"{tuple(param.shape)}, {param.dtype}); optimize its real view "
                "(torch.view_as_real) or put it in a group with an elementwise rule"
            )


class WrappedRule(TensorRule):
    """A tensor rule that steps another rule per parameter and changes only *how* it steps.

    Declarations, checks, flags, scalars and scalar-state names are the
    wrapped rule's (:attr:`inner`); subclasses implement :meth:`update` (and
    :meth:`init_state` where the stored form differs), e.g. the cautious mask
    (:mod:`descentlab.rules.cautious`) and low-precision state
    (:mod:`descentlab.rules.low_precision`).
    """

    def __init__(self, inner: Rule) -> None:
        self.inner = inner
        self.name = inner.name
        self.hparams = inner.hparams
        self.scalar_state = inner.scalar_state
        self.nonnegative_state = inner.nonnegative_state

    def check(self, group: Mapping[str, Any]) -> None:
        """The wrapped rule's checks."""
        self.inner.check(group)

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        """The wrapped rule's flags."""
        return self.inner.flags(group)

    def scalars(self, group: Mapping[str, Any]) -> dict[str, float]:
        """The wrapped rule's scalars."""
        return self.inner.scalars(group)

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        """The wrapped rule's fresh state."""
        return self.inner.init_state(param, flags, h)


def unsupported_option(rule: Rule, setting: str, option: HParam) -> ValueError:
    """The error for a group asking ``rule`` for an ``option`` it does not declare
    (``setting`` as the user wrote it), naming the registered rules that declare it."""
    from descentlab.rules import RULES  # the registry imports the rules, which import this

    offered = ", ".join(
        name for name, r in RULES.items() if any(hp.name == option.name for hp in r.hparams)
    )
    return ValueError(f"{setting} is not supported by {rule.name}; it is offered by {offered}")


def weight_decay_mode(group: Mapping[str, Any], decoupled: bool = False) -> str | None:
    """Structural weight-decay flag: ``None`` when off, else ``"coupled"``/``"decoupled"``."""
    if float(group["weight_decay"]) == 0.0:
        return None
    return "decoupled" if decoupled else "coupled"


def apply_weight_decay(
    param: Tensor, grad: Tensor, h: Mapping[str, Scalar], mode: str | None
) -> Tensor:
    """Apply weight decay λ and return the gradient the rule should use.

    * coupled (L2 regularisation, torch's default):  g ← g + λ θ
    * decoupled (Loshchilov & Hutter 2019, AdamW):   θ ← θ (1 − η λ), g unchanged
    """
    if mode == "coupled":
        return grad + h["weight_decay"] * param
    if mode == "decoupled":
        param.mul_(1 - h["lr"] * h["weight_decay"])
    return grad


def where(condition: Any, if_true: Scalar, if_false: Scalar) -> Scalar:
    """``if_true if condition else if_false`` for Python scalars and 0-dim tensors alike."""
    if isinstance(condition, Tensor):
        return torch.where(condition, if_true, if_false)
    return if_true if condition else if_false


def at_entries(grad: Tensor, values: Tensor) -> Tensor:
    """A sparse tensor with ``values`` at the entries of the coalesced sparse ``grad``."""
    return torch.sparse_coo_tensor(grad._indices(), values, grad.shape, check_invariants=False)
