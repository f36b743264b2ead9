"""Shampoo with blocks and layer-wise grafting (Gupta et al. 2018; Anil et al. 2020).

For a matrix gradient G (m×n) Shampoo keeps one statistic per dimension,

    L ← β₂ L + (1 − β₂) G Gᵀ,      R ← β₂ R + (1 − β₂) Gᵀ G      (L₀ = R₀ = ε_m I),

and every
``preconditioning_compute_steps`` steps their inverse roots
P_L = L^(−1/2r), P_R = R^(−1/2r), r the number of preconditioned dimensions
(``inverse_exponent_override`` replaces 2r). The preconditioned gradient is
S = P_Lᵀ-contracted G P_R (for a tensor of any order: one mode product per
preconditioned dimension, taken in the cyclic order of the dimensions).

**Blocks.** With ``shape_interpretation`` a tensor is first reshaped by merging
neighbouring dimensions while their product stays ≤ ``block_size`` (as SOAP's
``merge_dims``; a tensor whose dimensions all merge into one is not
preconditioned), then every dimension larger than ``block_size`` is cut into
blocks of ``block_size`` (the last one shorter); each block has its own
statistics and roots. 1-D tensors, tensors of rank below
``skip_preconditioning_rank_lt`` and tensors with a dimension larger than
``no_preconditioning_for_layers_with_dim_gt`` are not preconditioned: they
follow the graft alone. ``pre_conditioner_type`` ``"input"`` leaves the last
dimension out, ``"output"`` keeps only the last one.

**Grafting** (Agarwal et al. 2020, as in Anil et al.): a diagonal method's
direction D — ``"sgd"`` (G), ``"adagrad"`` (G/(√Σg² + ε_d)), ``"rmsprop"``
(G/(√v + ε_d), v ← β₂ v + (1 − β₂) g²), ``"sqrtn"`` (sign G) or ``"none"``
(G, and no rescaling) — gives the step's size, Shampoo its direction:

    S ← S · ‖D‖ / (‖S‖ + 10⁻¹⁶)        (both times η first unless decoupled_learning_rate)

then weight decay λ (decoupled: θ ← θ(1 − ηλ); else D, S += λθ), momentum on
both (m ← β₁m + S, or m ← m + (1 − β₁)(S − m) with moving_average_for_momentum;
the graft keeps its own m_D ← β₁m_D + w D, w = 1 − β₁ or 1), and

    u = m (once t ≥ start_preconditioning_step, else m_D),
    u ← β₁u + S (Nesterov; S → D before the start; lerp under moving averages),
    θ ← θ − η u        (η ← 1 without decoupled_learning_rate: it was applied to D and S).

The roots are the reference's coupled Newton iteration (``use_svd=False``) or
an SVD (see :mod:`descentlab.rules.matrix_roots`).

**Stacks.** The rule is batched: the flat engines hand it same-shape
neighbours as one stack (never reordered: ``in_any_order`` is False, since
the roots' random starts are drawn parameter by parameter). With more than
one torch thread a stack of matrices preconditioned on both sides takes
batched products (``bmm``/``baddbmm`` over the stack for the statistics and
the preconditioning, block by block when the matrices are cut into blocks,
each block with the reference's operands and layouts, so its bits) and
norms matrix by matrix;
anything else is stepped one tensor at a time. Everything is computed
operation for operation as ``pytorch_optimizer.ScalableShampoo`` computes it
(the stacked ``baddbmm`` when every block statistic has one shape, the same
random power-iteration starts in the same order), so float64 runs agree with
it to rounding.

**Root refreshes.** Every ``preconditioning_compute_steps`` steps the roots of
all the statistics of one side (of one tensor, or of every tensor of a stack)
are computed as one stack by
:func:`~descentlab.rules.matrix_roots.inverse_roots_schur_newton`, after the
random power-iteration starts are drawn in the reference's order (tensor by
tensor, statistic by statistic). Profiled (cProfile, one thread, the 48
statistics of 24 matrices of 256×256 after 10 steps, 11 iterations each,
load 4.7): the reference's roots take 1.00 s, of which 0.80 s are the 2 112
products of 256×256 matrices (four per iteration: X T, T², T⁴, T⁴ M), 0.12 s
``torch.dist`` (576 residuals, each a new M − I and a maximum over it) and
~0.05 s the power iterations (19 200 calls of a few µs); nothing else. Ours
take 0.91 s: the same 2 112 products, one ``mm`` each into reused aligned
matrices (torch's ``bmm`` would round differently at some sides, see that
module), 0.81 s; the residuals as ``amax|M − I|`` over each chunk of the
stack and the power iterations' norms and divisions batched (4 848 ``mv``
and 300 other calls). Neither has a float64 path, a copy of a stack or an
extra sync; a matrix's iteration syncs once per step, as the reference's.
The products are now 90% of a refresh, at the speed of MKL's ``mm``; more
would need ``bmm`` over the stack (bitwise ``mm``'s only at some sides, to be
checked side by side) or fewer products (not the reference's bits).

References: V. Gupta, T. Koren, Y. Singer, "Shampoo: Preconditioned Stochastic
Tensor Optimization", ICML 2018; R. Anil, V. Gupta, T. Koren, K. Regan,
Y. Singer, "Scalable Second Order Optimization for Deep Learning",
arXiv:2002.09018 (2020).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from descentlab.rules.base import STRUCTURAL, Flags, HParam, Scalar, TensorRule
from descentlab.rules.matrix_roots import inverse_root_svd, inverse_roots_schur_newton
from descentlab.rules.soap import merge_small_dims
from descentlab.validation import check_decay_rates, check_int, check_nonnegative

__all__ = [
    "ShampooRule",
    "ShampooLayout",
    "shampoo_layout",
    "GRAFTS",
    "PRECONDITIONER_TYPES",
    "check_graft_type",
    "check_pre_conditioner_type",
]

#: Graft names, in the order of pytorch_optimizer's LayerWiseGrafting codes 0…4.
GRAFTS = ("none", "sgd", "adagrad", "rmsprop", "sqrtn")
#: Preconditioned dimensions, in the order of pytorch_optimizer's PreConditionerType codes 0…2.
PRECONDITIONER_TYPES = ("all", "input", "output")


def _named(choices: tuple[str, ...]) -> Any:
    """A check accepting a name of ``choices`` or its index (the reference's IntEnum codes)."""

    def check(name: str, value: Any) -> str:
        """The name ``value`` stands for; a ValueError naming the argument otherwise."""
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        if not isinstance(value, bool) and isinstance(value, int) and 0 <= value < len(choices):
            return choices[int(value)]
        codes = ", ".join(f"{i}={c!r}" for i, c in enumerate(choices))
        raise ValueError(f"{name} must be one of {codes} (a name or its code), got {value!r}")

    return check


check_graft_type = _named(GRAFTS)
check_pre_conditioner_type = _named(PRECONDITIONER_TYPES)


def _check_count(name: str, value: Any) -> int:
    return check_int(name, value, minimum=1)


def _check_int0(name: str, value: Any) -> int:
    return check_int(name, value, minimum=0)


def _check_block_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    return value


@dataclass(frozen=True)
class ShampooLayout:
    """How one parameter shape is preconditioned (computed once per shape and flags).

    Attributes:
        work_shape: the shape after ``shape_interpretation`` (merged dimensions).
        splits: per dimension of ``work_shape``, its block sizes.
        selected: per dimension, whether it is preconditioned.
        sizes: the side of each block statistic, in the reference's order
            (block by block, each block's preconditioned dimensions in order);
            empty when the parameter is not preconditioned.
        slots: for each statistic, (its side d, its index in the stack of side d).
        exponent: p of the inverse p-th roots.
        stacked: whether the statistics are updated as one ``baddbmm`` (one side,
            blocks of one shape: the reference's same-shape path).
    """

    work_shape: tuple[int, ...]
    splits: tuple[tuple[int, ...], ...]
    selected: tuple[bool, ...]
    sizes: tuple[int, ...]
    slots: tuple[tuple[int, int], ...]
    exponent: int
    stacked: bool

    @property
    def rank(self) -> int:
        """The number of preconditioned dimensions of each block."""
        return sum(self.selected)

    def blocks(self, t: Tensor, batch_dims: int = 0) -> list[Tensor]:
        """``t`` (in the work shape, after ``batch_dims`` leading stack dimensions) cut into
        its blocks, in the statistics' order (views)."""
        parts = [t]
        for dim, sizes in enumerate(self.splits, start=batch_dims):
            if len(sizes) > 1:
                parts = [piece for part in parts for piece in torch.split(part, list(sizes), dim)]
        return parts

    def merge(self, parts: list[Tensor], batch_dims: int = 0) -> Tensor:
        """Inverse of :meth:`blocks`."""
        for dim in reversed(range(len(self.splits))):
            n = len(self.splits[dim])
            if n > 1:
                parts = [torch.cat(parts[i:i + n], batch_dims + dim)
                         for i in range(0, len(parts), n)]
        return parts[0]


def _block_sizes(d: int, block_size: int) -> tuple[int, ...]:
    if block_size <= 0 or block_size >= d:
        return (d,)
    count = (d - 1) // block_size
    return (block_size,) * count + (d - count * block_size,)


@functools.lru_cache(maxsize=1024)
def shampoo_layout(
    shape: tuple[int, ...],
    block_size: int,
    shape_interpretation: bool,
    pre_conditioner_type: str,
    skip_preconditioning_rank_lt: int,
    no_preconditioning_for_layers_with_dim_gt: int,
    inverse_exponent_override: int,
) -> ShampooLayout:
    """The :class:`ShampooLayout` of a parameter shape under these options."""
    work = tuple(merge_small_dims(shape, block_size)) if shape_interpretation else shape
    if pre_conditioner_type == "all" or len(work) <= 1:
        selected = (True,) * len(work)
    elif pre_conditioner_type == "input":
        selected = (True,) * (len(work) - 1) + (False,)
    else:
        selected = (False,) * (len(work) - 1) + (True,)
    rank = sum(selected)
    exponent = inverse_exponent_override if inverse_exponent_override > 0 else 2 * rank
    splits = tuple(_block_sizes(d, block_size) for d in work)
    skipped = len(shape) < skip_preconditioning_rank_lt or any(
        d > no_preconditioning_for_layers_with_dim_gt for d in shape)
    sizes: tuple[int, ...] = ()
    block_shapes: list[tuple[int, ...]] = []
    if len(work) > 1 and not skipped:
        block_shapes = list(itertools.product(*splits))
        sizes = tuple(b[i] for b in block_shapes for i in range(len(work)) if selected[i])
    counts: dict[int, int] = {}
    slots = []
    for d in sizes:
        slots.append((d, counts.get(d, 0)))
        counts[d] = counts.get(d, 0) + 1
    # the reference stacks the statistics when they have one shape (and then needs every
    # unfolded block to have one shape too; where it does not, it fails: we go per matrix)
    stacked = len(counts) == 1 and len(set(block_shapes)) == 1
    return ShampooLayout(work, splits, selected, sizes, tuple(slots), exponent, stacked)


class ShampooRule(TensorRule):
    """The grafted, blocked Shampoo update (see the module docstring); state per parameter.

    State: ``momentum`` (m), ``graft_momentum`` (m_D), ``graft_statistics``
    (Adagrad's Σg² or RMSprop's v, with those grafts), and for each side d of
    the block statistics ``statistics_{d}`` and ``preconditioners_{d}``, stacks
    ``[K_d, d, d]`` of the K_d statistics and roots of that side, in the
    reference's order.
    """

    name = "shampoo"
    batched = True
    #: the roots' power iterations draw their starts from torch's generator, parameter by
    #: parameter: the engines keep the group's order
    in_any_order = False
    hparams = (
        HParam("lr", 1e-3, check=check_nonnegative, doc="learning rate η"),
        HParam("betas", (0.9, 0.999), check=check_decay_rates,
               doc="momentum β₁ and statistics decay β₂", split=("beta1", "beta2")),
        HParam("moving_average_for_momentum", False, STRUCTURAL,
               doc="momentum as a moving average (weight 1 − β₁)"),
        HParam("weight_decay", 0.0, check=check_nonnegative, doc="weight decay λ"),
        HParam("decoupled_weight_decay", False, STRUCTURAL, doc="θ ← θ(1 − ηλ) instead of L2"),
        HParam("decoupled_learning_rate", True, STRUCTURAL,
               doc="apply η to the momentum, not to the preconditioned gradient"),
        HParam("inverse_exponent_override", 0, STRUCTURAL, check=_check_int0,
               doc="p of the inverse roots if > 0 (else 2·rank)"),
        HParam("start_preconditioning_step", 25, STRUCTURAL, check=_check_count,
               doc="first step of the Shampoo direction (before: the graft)"),
        HParam("preconditioning_compute_steps", 1000, STRUCTURAL, check=_check_count,
               doc="steps between inverse-root computations"),
        HParam("statistics_compute_steps", 1, STRUCTURAL, check=_check_count,
               doc="steps between statistics updates"),
        HParam("block_size", 512, STRUCTURAL, check=_check_block_size,
               doc="block side for large dimensions (and merge limit)"),
        HParam("skip_preconditioning_rank_lt", 1, STRUCTURAL, check=_check_int0,
               doc="tensors of lower rank are not preconditioned"),
        HParam("no_preconditioning_for_layers_with_dim_gt", 8192, STRUCTURAL,
               check=_check_int0, doc="tensors with a larger dimension are not preconditioned"),
        HParam("shape_interpretation", True, STRUCTURAL, doc="merge small dimensions first"),
        HParam("graft_type", "sgd", STRUCTURAL, check=check_graft_type,
               doc="graft: none, sgd, adagrad, rmsprop, sqrtn (or codes 0–4)"),
        HParam("pre_conditioner_type", "all", STRUCTURAL, check=check_pre_conditioner_type,
               doc="dimensions preconditioned: all, input, output (or codes 0–2)"),
        HParam("nesterov", True, STRUCTURAL, doc="Nesterov momentum"),
        HParam("diagonal_eps", 1e-10, check=check_nonnegative,
               doc="ε_d of the Adagrad/RMSprop grafts"),
        HParam("matrix_eps", 1e-6, check=check_nonnegative,
               doc="ε_m: initial statistics ε_m I and the roots' ridge"),
        HParam("use_svd", False, STRUCTURAL, doc="inverse roots by SVD (else coupled Newton)"),
    )

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        flags = super().flags(group)
        flags["graft_type"] = check_graft_type("graft_type", flags["graft_type"])
        flags["pre_conditioner_type"] = check_pre_conditioner_type("pre_conditioner_type",
                                                    flags["pre_conditioner_type"])
        return flags

    def layout(self, shape: Sequence[int], flags: Flags) -> ShampooLayout:
        """The blocks and statistics of a parameter of this shape."""
        return shampoo_layout(
            tuple(shape), flags["block_size"], bool(flags["shape_interpretation"]),
            flags["pre_conditioner_type"], flags["skip_preconditioning_rank_lt"],
            flags["no_preconditioning_for_layers_with_dim_gt"],
            flags["inverse_exponent_override"])

    # -- state ---------------------------------------------------------------------------

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        state = {"momentum": torch.zeros_like(param), "graft_momentum": torch.zeros_like(param)}
        if flags["graft_type"] in ("adagrad", "rmsprop"):
            state["graft_statistics"] = torch.zeros_like(param)
        layout = self.layout(param.shape, flags)
        for d in dict.fromkeys(layout.sizes):
            count = layout.sizes.count(d)
            eye = torch.eye(d, dtype=param.dtype, device=param.device).expand(count, d, d)
            state[f"statistics_{d}"] = (h["matrix_eps"] * eye).contiguous()
            state[f"preconditioners_{d}"] = eye.contiguous()
        return state

    # -- the pieces of a step ------------------------------------------------------------

    @staticmethod
    def _graft_direction(grad: Tensor, state: dict[str, Tensor], h: Mapping[str, Scalar],
                         graft: str) -> Tensor:
        """Accumulate the graft's statistics and return its direction D."""
        if graft == "adagrad":
            state["graft_statistics"].addcmul_(grad, grad)
        elif graft == "rmsprop":
            beta2 = h["beta2"]
            state["graft_statistics"].mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        if graft in ("adagrad", "rmsprop"):
            return grad.div(state["graft_statistics"].sqrt().add_(h["diagonal_eps"]))
        if graft == "sqrtn":
            return grad.sign()
        return grad

    @staticmethod
    def _add_statistics(grad: Tensor, state: dict[str, Tensor], layout: ShampooLayout,
                        beta2: float) -> None:
        """L_j ← β₂ L_j + w G₍ⱼ₎G₍ⱼ₎ᵀ for every block j and preconditioned dimension."""
        weight = 1.0 - beta2
        first = state[f"statistics_{layout.sizes[0]}"]
        blocks = layout.blocks(grad.to(first.dtype).reshape(layout.work_shape))
        axes = [i for i, on in enumerate(layout.selected) if on]
        if layout.stacked:
            unfolded = torch.stack([b.movedim(a, 0).reshape(b.size(a), -1)
                                    for b in blocks for a in axes])
            first.baddbmm_(unfolded, unfolded.mT, beta=beta2, alpha=weight)
            return
        slots = iter(layout.slots)
        for block in blocks:
            for axis in axes:
                others = [a for a in range(block.dim()) if a != axis]
                d, k = next(slots)
                stat = torch.tensordot(block, block, dims=[others, others])
                state[f"statistics_{d}"][k].mul_(beta2).add_(stat, alpha=weight)

    @staticmethod
    def _compute_roots(state: dict[str, Tensor], layout: ShampooLayout, flags: Flags,
                       h: Mapping[str, Scalar], batch: int | None = None) -> None:
        """P_j ← L_j^(−1/p) for every statistic, in the reference's order; with ``batch``, of
        every tensor of a stack (state entries [batch, …]).

        The coupled Newton roots of one side run as one stack
        (:func:`~descentlab.rules.matrix_roots.inverse_roots_schur_newton`: each matrix with
        the reference's bits), after the random power-iteration starts are drawn in the
        reference's order (tensor by tensor, statistic by statistic), so each matrix gets
        the start the reference gives it.
        """
        p = layout.exponent
        if flags["use_svd"]:
            for b in range(batch or 1):
                one = state if batch is None else {key: v[b] for key, v in state.items()}
                ShampooRule._svd_roots(one, layout, p)
            return
        sides = dict.fromkeys(d for d, _ in layout.slots)
        stats = {d: state[f"statistics_{d}"].reshape(-1, d, d) for d in sides}
        wide = {d: s if s.dtype in (torch.float32, torch.float64) else s.float()
                for d, s in stats.items()}
        starts: dict[int, list[Tensor]] = {d: [] for d in sides if d > 1}
        for _ in range(batch or 1):
            for d, _ in layout.slots:
                if d > 1:
                    starts[d].append(torch.randn(d, dtype=wide[d].dtype, device=wide[d].device))
        for d in sides:
            roots = inverse_roots_schur_newton(
                wide[d], p, ridge_epsilon=h["matrix_eps"],
                starts=torch.stack(starts[d]) if d > 1 else None)
            state[f"preconditioners_{d}"].view(-1, d, d).copy_(roots)

    @staticmethod
    def _svd_roots(state: dict[str, Tensor], layout: ShampooLayout, p: int) -> None:
        """P_j ← L_j^(−1/p) by SVD for every statistic of one tensor (one batched SVD when
        they are stacked, as the reference)."""
        if layout.stacked:
            d = layout.sizes[0]
            state[f"preconditioners_{d}"].copy_(inverse_root_svd(state[f"statistics_{d}"], p))
            return
        for d, k in layout.slots:
            stat = state[f"statistics_{d}"][k]
            wide = stat if stat.dtype in (torch.float32, torch.float64) else stat.float()
            state[f"preconditioners_{d}"][k].copy_(inverse_root_svd(wide, p))

    @staticmethod
    def _precondition(grad: Tensor, state: dict[str, Tensor], layout: ShampooLayout) -> Tensor:
        """The mode products of each block with its roots, merged back to the gradient's shape."""
        first = state[f"preconditioners_{layout.sizes[0]}"]
        blocks = layout.blocks(grad.to(first.dtype).reshape(layout.work_shape))
        slots = iter(layout.slots)
        out = []
        for block in blocks:
            cycle = (*range(1, block.dim()), 0)
            for on in layout.selected:
                if on:
                    d, k = next(slots)
                    block = torch.tensordot(block, state[f"preconditioners_{d}"][k],
                                            dims=[[0], [0]])
                else:
                    block = torch.permute(block, cycle)
            out.append(block)
        return layout.merge(out).reshape(grad.shape).to(grad.dtype)

    # -- the update ----------------------------------------------------------------------

    def update(
        self,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        h: Mapping[str, Scalar],
        step: Scalar,
        flags: Flags,
    ) -> None:
        """One Shampoo step of a stack [B, *shape] (see the module docstring): matrices
        preconditioned on both sides with batched products when torch has more than one
        thread (:meth:`_MatrixStack.fits`), anything else one tensor at a time."""
        shape = param.shape[1:]
        layout = self.layout(shape, flags)
        if (len(param) > 1 and torch.get_num_threads() > 1 and param.dtype == grad.dtype
                and _MatrixStack.fits(shape, layout)):
            self._step(param, grad, state, h, step, flags, layout, _MatrixStack)
            return
        for k in range(len(param)):
            self._step(param[k], grad[k], {key: v[k] for key, v in state.items()},
                       h, step, flags, layout, _OneTensor)

    def _step(self, param, grad, state, h, step, flags, layout, ops) -> None:
        """One Shampoo step of one tensor (``ops`` = :class:`_OneTensor`) or of a stack of
        matrices (:class:`_MatrixStack`)."""
        t = int(step)
        lr, beta1, beta2 = h["lr"], h["beta1"], h["beta2"]
        graft = flags["graft_type"]
        precondition_multiplier = 1.0 if flags["decoupled_learning_rate"] else lr
        momentum_multiplier = lr if flags["decoupled_learning_rate"] else 1.0
        moving = flags["moving_average_for_momentum"]
        w = 1.0 - beta1 if moving else 1.0
        preconditioning = t >= flags["start_preconditioning_step"]

        direction = self._graft_direction(grad, state, h, graft)
        if layout.sizes and t % flags["statistics_compute_steps"] == 0:
            ops.add_statistics(grad, state, layout, beta2)
        if layout.sizes and t % flags["preconditioning_compute_steps"] == 0:
            ops.compute_roots(state, layout, flags, h)

        wd = h["weight_decay"]
        coupled = wd > 0.0 and not flags["decoupled_weight_decay"]  # adds λθ to both in place
        # (x·1 is x bit for bit: the reference's copies by a multiplier of 1 are skipped)
        if precondition_multiplier != 1.0 or (coupled and direction is grad):
            graft_grad = direction.mul(precondition_multiplier)
        else:
            graft_grad = direction
        if layout.sizes:
            shampoo_grad = ops.precondition(grad, state, layout)
            if precondition_multiplier != 1.0:
                shampoo_grad.mul_(precondition_multiplier)
        else:
            shampoo_grad = graft_grad.clone()
        if graft != "none":
            shampoo_grad.mul_(ops.norms(graft_grad) / (ops.norms(shampoo_grad) + 1e-16))

        if wd != 0.0 and flags["decoupled_weight_decay"]:
            param.mul_(1.0 - wd * lr)
        elif coupled:
            graft_grad.add_(param, alpha=wd)
            shampoo_grad.add_(param, alpha=wd)

        if moving:
            state["momentum"].lerp_(shampoo_grad, weight=w)
        else:
            state["momentum"].mul_(beta1).add_(shampoo_grad)
        graft_momentum = state["graft_momentum"].mul_(beta1).add_(graft_grad, alpha=w)

        update = state["momentum"] if preconditioning else graft_momentum
        if flags["nesterov"]:
            latest = shampoo_grad if preconditioning else graft_grad
            if moving:
                update = update.lerp(latest, weight=w)
            else:
                update = update.mul(beta1).add_(latest)
        param.add_(update, alpha=-momentum_multiplier)


class _OneTensor:
    """The steps of Shampoo that see one whole tensor, as the reference computes them."""

    add_statistics = staticmethod(ShampooRule._add_statistics)
    compute_roots = staticmethod(ShampooRule._compute_roots)
    precondition = staticmethod(ShampooRule._precondition)

    @staticmethod
    def norms(t: Tensor) -> Tensor:
        """‖t‖ (Frobenius), a 0-dim tensor."""
        return torch.linalg.norm(t)


#: torch's CPU ``bmm`` computes a matrix of fewer multiply-adds with a plain loop, whose
#: rounding differs from the BLAS call ``mm`` makes (from this many on it makes the same call)
_BMM_BLAS_MIN = 400


class _MatrixStack:
    """The same steps for a stack [B, m, n] of matrices preconditioned on both sides, in one
    block or several, with batched products.

    Block by block (block j of every matrix of the stack: one strided view), each
    ``bmm`` has the operands, in the same layouts, of the reference's ``mm`` for
    one block of one matrix (``tensordot`` contracting dimension 0 is ``Xᵀ P``;
    its stacked statistics, ``[G_1, G_1ᵀ, G_2, G_2ᵀ, …]`` when every block
    statistic has one side, one ``baddbmm``), so each matrix of the stack gets
    the reference's bits; norms are taken matrix by matrix, and the roots
    computed matrix by matrix in the stack's order (the order of the
    reference's random power-iteration starts).

    A matrix of more rows than ``block_size`` has the work shape (1, m, n) (the
    reference's dimension merging puts a 1 first): each block then also has a
    1×1 statistic ‖G_j‖², taken matrix by matrix with the reference's call (a
    batched product of width one rounds differently), and its root
    multiplies the block first (a product of one term: exact either way).
    """

    @staticmethod
    def fits(shape: Sequence[int], layout: ShampooLayout) -> bool:
        """Whether a stack of this matrix shape and layout is stepped batched, bitwise."""
        if not (len(shape) == 2 and all(layout.selected)
                and layout.work_shape in (tuple(shape), (1, *shape))):
            return False
        if len(layout.work_shape) == 3 and layout.stacked:  # only with 1×1 blocks
            return False
        rows, cols = layout.splits[-2:]
        return all(bm * bn * min(bm, bn) >= _BMM_BLAS_MIN for bm in rows for bn in cols)

    @staticmethod
    def _blocks(t: Tensor, layout: ShampooLayout):
        """Per block: block j of every matrix of ``t`` [B, m, n] ([B, 1, b_m, b_n] views with
        the leading 1 of the work shape), its slot of the 1×1 statistic (or None) and the
        (side, index) slots of its left and its right statistic."""
        blocks = layout.blocks(t.reshape(len(t), *layout.work_shape), batch_dims=1)
        per_block = len(layout.work_shape)
        out = []
        for j, block in enumerate(blocks):
            *scalar, left, right = layout.slots[j * per_block:(j + 1) * per_block]
            out.append((block, scalar[0][1] if scalar else None, left, right))
        return out

    @staticmethod
    def add_statistics(grad: Tensor, state: dict[str, Tensor], layout: ShampooLayout,
                       beta2: float) -> None:
        """L_j ← β₂L_j + (1 − β₂) G_j G_jᵀ, R_j ← β₂R_j + (1 − β₂) G_jᵀ G_j for every block j
        of every matrix of the stack (and the 1×1 ‖G_j‖² of a work shape (1, m, n))."""
        weight = 1.0 - beta2
        blocks = _MatrixStack._blocks(grad, layout)
        if layout.stacked:  # one side: the statistics [B, K, d, d] as one batched product
            d = layout.sizes[0]
            unfolded = torch.stack([x for b, *_ in blocks for x in (b, b.mT)], dim=1)
            state[f"statistics_{d}"].view(-1, d, d).baddbmm_(
                unfolded.view(-1, d, d), unfolded.view(-1, d, d).mT, beta=beta2, alpha=weight)
            return
        for block, scalar, (m, i), (n, k) in blocks:
            if scalar is not None:
                axes = [[1, 2], [1, 2]]
                squares = torch.stack([torch.tensordot(b, b, dims=axes) for b in block])
                state["statistics_1"][:, scalar].mul_(beta2).add_(squares, alpha=weight)
                block = block[:, 0]
            state[f"statistics_{m}"][:, i].mul_(beta2).add_(torch.bmm(block, block.mT),
                                                            alpha=weight)
            state[f"statistics_{n}"][:, k].mul_(beta2).add_(torch.bmm(block.mT, block),
                                                            alpha=weight)

    @staticmethod
    def compute_roots(state: dict[str, Tensor], layout: ShampooLayout, flags: Flags,
                      h: Mapping[str, Scalar]) -> None:
        """Every matrix's roots: those of one side as one stack, the random starts drawn
        matrix by matrix in the stack's order (the reference's)."""
        ShampooRule._compute_roots(state, layout, flags, h, batch=len(state["momentum"]))

    @staticmethod
    def precondition(grad: Tensor, state: dict[str, Tensor], layout: ShampooLayout) -> Tensor:
        """P_Lᵀ-contracted G_j, then P_R: (G_jᵀ P_L)ᵀ P_R for every block j of every matrix
        (after its 1×1 root with a work shape (1, m, n)), merged back."""
        out = []
        for block, scalar, (m, i), (n, k) in _MatrixStack._blocks(grad, layout):
            x = block
            if scalar is not None:
                x = torch.bmm(block.reshape(len(block), -1, 1),
                              state["preconditioners_1"][:, scalar]).view(block.shape)[:, 0]
            x = torch.bmm(torch.bmm(x.mT, state[f"preconditioners_{m}"][:, i]).mT,
                          state[f"preconditioners_{n}"][:, k])
            out.append(x.view(block.shape))
        return layout.merge(out, batch_dims=1).reshape(grad.shape)

    @staticmethod
    def norms(t: Tensor) -> Tensor:
        """‖t_b‖ of each matrix, shaped [B, 1, 1] (computed one matrix at a time)."""
        return torch.stack([torch.linalg.norm(x) for x in t]).view(-1, 1, 1)

