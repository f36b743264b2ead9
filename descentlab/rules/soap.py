"""SOAP: Adam run in the eigenbasis of Shampoo's preconditioner (Vyas et al., 2024).

For a matrix parameter with gradient G (m×n), SOAP keeps Shampoo's two
Kronecker factors and their eigenbases,

    L ← β_s L + (1 − β_s) G Gᵀ,      R ← β_s R + (1 − β_s) Gᵀ G,
    Q_L, Q_R: eigenvectors of L and R (by decreasing eigenvalue),

and runs Adam on the *rotated* gradient G′ = Q_Lᵀ G Q_R:

    m ← β₁ m + (1 − β₁) G                 (first moment, in the original basis)
    v ← β₂ v + (1 − β₂) G′ ⊙ G′           (second moment, in the rotated basis)
    N = Q_L [ (Q_Lᵀ m Q_R) / (√v + ε) ] Q_Rᵀ
    θ ← θ − η √(1 − β₂ᵏ)/(1 − β₁ᵏ) · N,     then θ ← θ (1 − ηλ)

with k = t − 1. A tensor of any order gets one factor per dimension (the
rotation is a mode-i product for each dimension i); dimensions larger than
``max_precondition_dim`` (and 1-D tensors unless ``precondition_1d``) are
left unrotated, so a bias is updated by plain Adam. ``merge_dims`` first
reshapes a tensor by merging neighbouring small dimensions (as long as their
product stays ≤ ``max_precondition_dim``), a 4-D ``channels_last`` one after
moving its channels to dimension 1.

Schedule, as in the reference implementations: the first step only
accumulates the factors and computes their eigenbases with ``eigh`` (the
parameter does not move); each later step updates the parameter with the old
bases, then accumulates the factors, and every ``precondition_frequency``-th
one (k divisible by it) refreshes the bases by one step of power iteration,
Q ← qr(F Q) with the columns first sorted by the estimated eigenvalues
diag(Qᵀ F Q) (and v permuted to match).

Same-shape matrices stepped together (the flat engines hand the rule a stack
``[B, m, n]`` of neighbours) are updated with batched products when torch
runs on more than one thread and the matrices are not tiny
(:attr:`SOAPRule.batch_min_work`): each ``bmm`` computes every matrix as the
reference's ``mm`` does, bit for bit, but spreads the stack over the threads;
the first step and the basis refreshes (``eigh``, QR) go matrix by matrix.
The batched products and quotients are written into a workspace the stack
keeps between steps (:class:`_Workspace`), so no step asks the system for
fresh memory.

Numerics follow ``pytorch_optimizer.SOAP`` operation for operation (its
tensordot projections, ``eigh`` of F + 10⁻³⁰I, the QR computed in float32 and
cast back), so float64 runs agree to rounding. The authors' ``soap.py``
computes the same algorithm but also runs ``eigh`` in float32.

Reference: N. Vyas, D. Morwani, R. Zhao, I. Shapira, D. Brandfonbrener,
L. Janson, S. Kakade, "SOAP: Improving and Stabilizing Shampoo using Adam",
arXiv:2409.11321 (2024).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from descentlab.rules.base import STRUCTURAL, Flags, HParam, Scalar, TensorRule
from descentlab.validation import (
    check_decay_rates,
    check_int,
    check_interval,
    check_nonnegative,
    one_of,
)

__all__ = ["SOAPRule", "merge_small_dims"]


def merge_small_dims(shape: Sequence[int], max_dim: int) -> list[int]:
    """Merge neighbouring dimensions while their product stays ≤ ``max_dim``.

    ``[1, 2, 512, 1, 2048, 1, 3, 4]`` with ``max_dim=1024`` becomes
    ``[1024, 2048, 12]``. As in ``pytorch_optimizer``, a shape that merges into
    a single dimension gives ``[1]`` (so only a one-element tensor can be merged
    that far; :meth:`SOAPRule.check_param` refuses the others).
    """
    merged: list[int] = []
    product = 1
    for d in shape:
        product *= d
        if product > max_dim:
            merged.append(product // d)
            product = d
    merged.append(product)
    return merged if len(merged) > 1 else [1]


def _check_shampoo_beta(name: str, value: Any) -> Any:
    if value is not None:
        check_interval(name, value, 0.0, 1.0)
    return value


def _check_count(name: str, value: Any) -> int:
    return check_int(name, value, minimum=1)


def _column_major(q: Tensor) -> Tensor:
    """``q`` (a matrix or a stack of them) column-major (no copy if it is already)."""
    return q.mT.contiguous().mT


class _Workspace:
    """Scratch memory of a stack's batched step, kept from step to step.

    A batched step of B matrices m×n makes products and quotients of B·m·n
    elements (and the factors' B·m², B·n² outer products). Fresh tensors that
    large come from the system each step (the allocator returns them to it), and
    every page of them faults on first touch: measured ~6,000 page faults per
    step on 24 × 256², where the reference's per-matrix temporaries reuse freed
    memory. So each stack keeps one buffer of max(3·B·m·n, B·max(m, n)²)
    elements (half the size of its state or less) for as long as its
    ``GG_0`` stack lives: ``half`` ([B, n, m], a projection's first product),
    ``projected`` and ``result`` ([B, m, n]), and :meth:`outer` over the same
    memory once they are done with.
    """

    #: a ``GG_0`` stack → its workspace (dropped with the stack)
    _kept: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def __init__(self, grad: Tensor) -> None:
        count, m, n = grad.shape
        self.key = (tuple(grad.shape), grad.dtype, grad.device)
        each = count * m * n
        self.flat = grad.new_empty(max(3 * each, count * max(m, n) ** 2))
        self.count = count
        self.half = self.flat[:each].view(count, n, m)
        self.projected = self.flat[each:2 * each].view(count, m, n)
        self.result = self.flat[2 * each:3 * each].view(count, m, n)

    @classmethod
    def of(cls, factors: Tensor, grad: Tensor) -> _Workspace:
        """The workspace of the stack whose first factors are ``factors`` (made at first use)."""
        found = cls._kept.get(factors)
        if found is None or found.key != (tuple(grad.shape), grad.dtype, grad.device):
            found = cls._kept[factors] = cls(grad)
        return found

    def outer(self, d: int) -> Tensor:
        """A [B, d, d] tensor over the workspace (for a factor's outer products)."""
        return self.flat[: self.count * d * d].view(self.count, d, d)


class SOAPRule(TensorRule):
    """The SOAP update (see the module docstring); state per parameter.

    State: ``exp_avg`` (m, shaped like the parameter), ``exp_avg_sq`` (v, in
    the rotated basis) and for each rotated dimension i of the working shape
    ``GG_i`` (its factor) and ``Q_i`` (its eigenbasis).
    """

    name = "soap"
    batched = True
    #: With more than one torch thread, a stack of matrices is stepped with batched products
    #: (``bmm`` spreads the stack over the threads, where each small ``mm`` splits poorly over
    #: them; on one thread the loop of ``mm`` is as fast) when every product has at least this
    #: many multiply-adds per matrix (m·n·min(m, n)): from there torch's ``bmm`` runs each
    #: matrix through the BLAS kernel of ``mm`` (bitwise equal); below it a loop of its own
    #: rounds differently, and the stack is stepped one matrix at a time.
    batch_min_work = 1024
    hparams = (
        HParam("lr", 3e-3, check=check_nonnegative, doc="learning rate η"),
        HParam("betas", (0.95, 0.95), check=check_decay_rates, doc="Adam's (β₁, β₂)",
               split=("beta1", "beta2")),
        HParam("shampoo_beta", None, STRUCTURAL, check=_check_shampoo_beta,
               doc="decay β_s of the factors (None: β₂)"),
        HParam("weight_decay", 1e-2, check=check_nonnegative, doc="decoupled weight decay λ"),
        HParam("precondition_frequency", 10, STRUCTURAL, check=_check_count,
               doc="steps between eigenbasis refreshes"),
        HParam("max_precondition_dim", 10000, STRUCTURAL, check=_check_count,
               doc="larger dimensions are not rotated"),
        HParam("merge_dims", False, STRUCTURAL, doc="merge small neighbouring dimensions"),
        HParam("precondition_1d", False, STRUCTURAL, doc="rotate 1-D tensors too"),
        HParam("correct_bias", True, STRUCTURAL, doc="Adam's bias correction"),
        HParam("normalize_gradient", False, STRUCTURAL, doc="divide the update by its RMS"),
        HParam("data_format", "channels_first", STRUCTURAL,
               check=one_of(("channels_first", "channels_last")),
               doc="layout of 4-D tensors for merge_dims"),
        HParam("eps", 1e-8, check=check_nonnegative, doc="ε added to √v"),
    )

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        flags = super().flags(group)
        if flags["shampoo_beta"] is None:
            flags["shampoo_beta"] = float(group["betas"][1])
        return flags

    def check_param(self, param: Tensor, group: Mapping[str, Any]) -> None:
        """Refuse what the reference cannot reshape: ``merge_dims`` on 1 < numel ≤ max dim."""
        super().check_param(param, group)
        if group["merge_dims"] and 1 < param.numel() <= group["max_precondition_dim"]:
            raise ValueError(
                f"SOAP with merge_dims=True cannot handle a parameter of shape "
                f"{tuple(param.shape)}: its {param.numel()} elements merge into one dimension "
                f"(<= max_precondition_dim={group['max_precondition_dim']}), which "
                "pytorch_optimizer's SOAP fails to reshape; put it in a group with "
                "merge_dims=False"
            )

    # -- the working shape and the rotated dimensions --------------------------------------

    @staticmethod
    def _merges(shape: Sequence[int], flags: Flags) -> bool:
        return bool(flags["merge_dims"]) and len(shape) != 1

    @staticmethod
    def _channels_last(shape: Sequence[int], flags: Flags) -> bool:
        return flags["data_format"] == "channels_last" and len(shape) == 4

    def _work_shape(self, shape: Sequence[int], flags: Flags) -> list[int]:
        if not self._merges(shape, flags):
            return list(shape)
        if self._channels_last(shape, flags):
            shape = (shape[0], shape[3], shape[1], shape[2])
        return merge_small_dims(shape, flags["max_precondition_dim"])

    def _rotated(self, shape: Sequence[int], flags: Flags) -> list[bool]:
        """Per dimension of the working shape: whether it has a factor and a basis."""
        limit = flags["max_precondition_dim"]
        if len(shape) == 1:
            return [bool(flags["precondition_1d"]) and shape[0] <= limit]
        return [d <= limit for d in self._work_shape(shape, flags)]

    def _to_work(self, t: Tensor, flags: Flags) -> Tensor:
        if not self._merges(t.shape, flags):
            return t
        if self._channels_last(t.shape, flags):
            t = t.permute(0, 3, 1, 2)
        return t.reshape(merge_small_dims(t.shape, flags["max_precondition_dim"]))

    def _from_work(self, t: Tensor, shape: torch.Size, flags: Flags) -> Tensor:
        if not self._merges(shape, flags):
            return t
        if self._channels_last(shape, flags):
            return t.reshape(shape[0], shape[3], shape[1], shape[2]).permute(0, 2, 3, 1)
        return t.reshape(shape)

    # -- state and update ------------------------------------------------------------------

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        state = {"exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param)}
        work = self._work_shape(param.shape, flags)
        for i, rotated in enumerate(self._rotated(param.shape, flags)):
            if rotated:
                d = work[i]
                state[f"GG_{i}"] = param.new_zeros(d, d)
                state[f"Q_{i}"] = param.new_zeros(d, d).t()  # column-major (see _bases)
        return state

    def keeps_layout(self, key: str) -> bool:
        """The bases stay column-major, per parameter (a square parameter's basis would
        otherwise take a row-major flat slot, and every step a transposing copy)."""
        return key.startswith("Q_")

    @staticmethod
    def _bases(state: Mapping[str, Tensor], count: int) -> list[Tensor | None]:
        """The bases in column-major layout, as LAPACK returns them to the reference.

        The layout decides which matrix-multiply kernel runs, and so the rounding:
        reading the bases as the reference holds them keeps the two bitwise equal.
        The state keeps them column-major (:meth:`init_state`, :meth:`keeps_layout`),
        so this is a view; a basis loaded in another layout is copied.
        """
        return [None if q is None else _column_major(q)
                for q in (state.get(f"Q_{i}") for i in range(count))]

    def _project(
        self, t: Tensor, bases: list[Tensor | None], flags: Flags, backward: bool = False
    ) -> Tensor:
        """Mode products with each basis (Qᵀ forward, Q backward); unrotated dims cycle."""
        shape = t.shape
        t = self._to_work(t, flags)
        for q in bases:
            if q is None:
                t = t.permute([*range(1, t.dim()), 0])
            else:
                t = torch.tensordot(t, q, dims=[[0], [1 if backward else 0]])
        return self._from_work(t, shape, flags)

    def _accumulate(self, grad: Tensor, state: dict[str, Tensor], rotated: list[bool],
                    flags: Flags) -> None:
        """F_i ← β_s F_i + (1 − β_s) G₍ᵢ₎G₍ᵢ₎ᵀ for each rotated dimension i."""
        weight = 1.0 - flags["shampoo_beta"]
        if grad.dim() == 1:
            if rotated[0]:
                state["GG_0"].lerp_(grad.unsqueeze(1) @ grad.unsqueeze(0), weight=weight)
            return
        work = self._to_work(grad, flags)
        for i, on in enumerate(rotated):
            if on:
                others = [d for d in range(work.dim()) if d != i]
                state[f"GG_{i}"].lerp_(torch.tensordot(work, work, dims=[others, others]),
                                       weight=weight)

    @staticmethod
    def _eigenbasis(factor: Tensor) -> Tensor:
        """Eigenvectors of the factor, by decreasing eigenvalue (float64 if eigh fails)."""
        eye = torch.eye(factor.shape[0], device=factor.device, dtype=factor.dtype)
        try:
            _, q = torch.linalg.eigh(factor + 1e-30 * eye)
        except (RuntimeError, NotImplementedError):  # no eigh for this dtype, or no convergence
            wide = factor.to(torch.float64) + 1e-30 * eye.to(torch.float64)
            q = torch.linalg.eigh(wide)[1].to(factor.dtype)
        return torch.flip(q, dims=[1])

    def _refresh_bases(self, state: dict[str, Tensor], rotated: list[bool], flags: Flags) -> None:
        """One power-iteration step per basis, columns sorted by estimated eigenvalue."""
        v = state["exp_avg_sq"]
        work = self._to_work(v, flags)
        for i, on in enumerate(rotated):
            if not on:
                continue
            factor, q = state[f"GG_{i}"], _column_major(state[f"Q_{i}"])
            fq = factor @ q
            order = torch.argsort((q * fq).sum(dim=0), descending=True)
            work = work.index_select(i, order)
            power = fq.index_select(1, order)
            state[f"Q_{i}"].copy_(torch.linalg.qr(power.to(torch.float32))[0].to(power.dtype))
        v.copy_(self._from_work(work, v.shape, flags))

    def update(
        self,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        h: Mapping[str, Scalar],
        step: Scalar,
        flags: Flags,
    ) -> None:
        """One SOAP step of a stack [B, *shape] (see the module docstring): matrices rotated
        on both sides with batched products, anything else one tensor at a time."""
        shape = param.shape[1:]
        if (
            step > 1
            and len(param) > 1
            and torch.get_num_threads() > 1
            and len(shape) == 2
            and self._work_shape(shape, flags) == list(shape)
            and all(self._rotated(shape, flags))
            and shape[0] * shape[1] * min(shape) >= self.batch_min_work
        ):
            self._update_matrices(param, grad, state, h, step, flags)
            return
        for k in range(len(param)):
            self._update_one(param[k], grad[k], {key: v[k] for key, v in state.items()},
                             h, step, flags)

    def _step_size(self, h: Mapping[str, Scalar], step: Scalar, flags: Flags) -> float:
        """η √(1 − β₂ᵏ)/(1 − β₁ᵏ) with k = t − 1 (η without the bias correction)."""
        k = int(step) - 1
        if not flags["correct_bias"]:
            return h["lr"]
        correction = math.sqrt(1.0 - math.pow(h["beta2"], k)) / (1.0 - math.pow(h["beta1"], k))
        return h["lr"] * correction

    def _adam_in_basis(self, param, grad, state, h, step, flags, forward, backward,
                       stacked=False, denominator=None) -> None:
        """Adam in the eigenbasis: m ← lerp(m, G, 1 − β₁), v ← lerp(v, (Qᵀ G Q)², 1 − β₂),
        θ ← θ − η_t Q ((Qᵀ m Q) / (√v + ε)) Qᵀ, then the decoupled decay.

        ``forward``/``backward`` project into and out of the basis (one tensor,
        or a stack with batched products); with ``normalize_gradient`` the
        direction is divided by its RMS (each matrix's own, for a ``stacked`` one).
        A ``stacked`` step's projections are its workspace, worked on in place (the
        same bits as fresh tensors), and √v + ε goes into ``denominator``; one
        tensor's may be views of G or m (an unrotated tensor's are), so it makes
        fresh tensors, as the reference.
        """
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(grad, weight=1.0 - h["beta1"])
        projected = forward(grad)
        v.lerp_(projected.square_() if stacked else projected.square(),
                weight=1.0 - h["beta2"])
        denom = torch.sqrt(v, out=denominator) if stacked else v.sqrt()
        denom.add_(h["eps"])
        numerator = forward(m)
        direction = backward(numerator.div_(denom) if stacked else numerator / denom)
        if flags["normalize_gradient"]:
            for d in (direction if stacked else [direction]):
                d.div_(torch.mean(d.square()).sqrt_().add_(h["eps"]))
        param.add_(direction, alpha=-self._step_size(h, step, flags))
        if h["weight_decay"] != 0.0:
            param.mul_(1.0 - h["weight_decay"] * h["lr"])

    def _update_matrices(self, param, grad, state, h, step, flags) -> None:
        """A step of a stack of matrices [B, m, n] with both bases, after the first.

        The same products as :meth:`_update_one` (each ``tensordot`` there is an
        ``mm`` of the same operands in the same layouts: Qᵀ-projections as
        ``Gᵀ Q_L``, then ``(·)ᵀ Q_R``), batched, into the stack's
        :class:`_Workspace`; elementwise work over the stack.
        """
        left, right = (_column_major(state[f"Q_{i}"]) for i in (0, 1))
        work = _Workspace.of(state["GG_0"], grad)
        self._adam_in_basis(
            param, grad, state, h, step, flags,
            lambda t: torch.bmm(torch.bmm(t.mT, left, out=work.half).mT, right,
                                out=work.projected),
            lambda t: torch.bmm(torch.bmm(t.mT, left.mT, out=work.half).mT, right.mT,
                                out=work.result),
            stacked=True, denominator=work.result,
        )
        weight = 1.0 - flags["shampoo_beta"]
        state["GG_0"].lerp_(torch.bmm(grad, grad.mT, out=work.outer(grad.shape[1])),
                            weight=weight)
        state["GG_1"].lerp_(torch.bmm(grad.mT, grad, out=work.outer(grad.shape[2])),
                            weight=weight)
        if (int(step) - 1) % flags["precondition_frequency"] == 0:
            rotated = [True, True]
            for k in range(len(param)):
                self._refresh_bases({key: value[k] for key, value in state.items()}, rotated,
                                    flags)

    def _update_one(self, param, grad, state, h, step, flags) -> None:
        """One SOAP step of one tensor (the first only builds the bases)."""
        rotated = self._rotated(param.shape, flags)
        if step == 1:
            self._accumulate(grad, state, rotated, flags)
            for i, on in enumerate(rotated):
                if on:
                    state[f"Q_{i}"].copy_(self._eigenbasis(state[f"GG_{i}"]))
            return
        bases = self._bases(state, len(rotated))
        self._adam_in_basis(
            param, grad, state, h, step, flags,
            lambda t: self._project(t, bases, flags),
            lambda t: self._project(t, bases, flags, backward=True),
        )
        self._accumulate(grad, state, rotated, flags)
        if (int(step) - 1) % flags["precondition_frequency"] == 0:
            self._refresh_bases(state, rotated, flags)
