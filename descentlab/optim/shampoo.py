"""Shampoo with blocks and layer-wise grafting (Anil et al. 2020), and its 2018 form."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from descentlab.optim.base import RuleOptimizer
from descentlab.rules import get_rule
from descentlab.rules.shampoo import check_graft_type, check_pre_conditioner_type

__all__ = ["Shampoo", "PlainShampoo"]


class Shampoo(RuleOptimizer):
    r"""Shampoo: Kronecker-factored preconditioning, with blocks and grafting (Anil et al., 2020).

    For a matrix gradient G with statistics L ← β₂L + (1−β₂)GGᵀ and
    R ← β₂R + (1−β₂)GᵀG (from ε_m I), the direction is
    S = L^(−1/4) G R^(−1/4) (roots recomputed every
    ``preconditioning_compute_steps``; −1/2r for r preconditioned dimensions of
    a tensor of any order), rescaled to the norm of a diagonal method's
    direction D (``graft_type``: SGD, Adagrad, RMSprop, sign, or none):

        S ← S ‖D‖/(‖S‖ + 10⁻¹⁶),    m ← β₁m + S,    θ ← θ − η(β₁m + S)   (Nesterov)

    Before ``start_preconditioning_step`` the step is the graft's own (momentum
    on D). Dimensions over ``block_size`` are cut into blocks with their own
    statistics; with ``shape_interpretation`` small dimensions are merged
    first. Tensors that are not preconditioned (1-D ones, tensors whose
    dimensions all merge into one, those over
    ``no_preconditioning_for_layers_with_dim_gt``) follow the graft. See
    :mod:`descentlab.rules.shampoo` for every option.

    Arguments, defaults and arithmetic are ``pytorch_optimizer.ScalableShampoo``'s:
    the inverse roots are its coupled Newton iteration (an approximation to
    about 10⁻³, with a random power-iteration start from torch's global
    generator), or an SVD with ``use_svd``; float64 runs agree with it to
    rounding. ``graft_type`` and ``pre_conditioner_type`` take the reference's
    integer codes or the names ``"none"``, ``"sgd"``, ``"adagrad"``,
    ``"rmsprop"``, ``"sqrtn"`` and ``"all"``, ``"input"``, ``"output"``.
    Differences: every option is per parameter group (the reference keeps all
    but lr, betas, weight decay, momentum options and nesterov per optimizer),
    the step is counted per parameter, ``maximize`` leaves ``param.grad``
    alone, the state is tensors (``state_dict`` round-trips; the reference's
    Python objects do not load into it), and for bfloat16/float16 parameters
    the statistics are kept in the parameter's dtype (the reference: float32),
    their roots computed in float32.

    Args:
        lr: η (default 1e-3). betas: (β₁, β₂) (default (0.9, 0.999)).
        moving_average_for_momentum: m ← β₁m + (1−β₁)S (default False).
        weight_decay: λ (default 0). decoupled_weight_decay: θ ← θ(1−ηλ) (default: L2).
        decoupled_learning_rate: η applied to the momentum (default True), else to D and S.
        inverse_exponent_override: p of the roots if > 0 (default 0: 2·rank).
        start_preconditioning_step: first step with the Shampoo direction (default 25).
        preconditioning_compute_steps: steps between root computations (default 1000).
        statistics_compute_steps: steps between statistics updates (default 1).
        block_size: block side (default 512). skip_preconditioning_rank_lt: (default 1).
        no_preconditioning_for_layers_with_dim_gt: (default 8192).
        shape_interpretation: merge small dimensions (default True).
        graft_type: default ``"sgd"`` (code 1). pre_conditioner_type: default ``"all"`` (0).
        nesterov: default True. diagonal_eps: ε of the Adagrad/RMSprop grafts (1e-10).
        matrix_eps: ε_m (1e-6). use_svd: roots by SVD (default False).
        maximize: maximise instead. engine, torch_options: see
        :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("shampoo")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        moving_average_for_momentum: bool = False,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        decoupled_learning_rate: bool = True,
        inverse_exponent_override: int = 0,
        start_preconditioning_step: int = 25,
        preconditioning_compute_steps: int = 1000,
        statistics_compute_steps: int = 1,
        block_size: int = 512,
        skip_preconditioning_rank_lt: int = 1,
        no_preconditioning_for_layers_with_dim_gt: int = 8192,
        shape_interpretation: bool = True,
        graft_type: int | str = "sgd",
        pre_conditioner_type: int | str = "all",
        nesterov: bool = True,
        diagonal_eps: float = 1e-10,
        matrix_eps: float = 1e-6,
        use_svd: bool = False,
        maximize: bool = False,
        *,
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        # the reference's IntEnum codes become names, so state_dict() holds only plain values
        graft_type = check_graft_type("graft_type", graft_type)
        pre_conditioner_type = check_pre_conditioner_type("pre_conditioner_type",
                                                          pre_conditioner_type)
        super().__init__(params, locals(), engine=engine, **torch_options)


class PlainShampoo(RuleOptimizer):
    r"""Shampoo in its 2018 form (Gupta et al.): a full statistic per dimension, no grafting.

    For a tensor G of order k: G ← G + μ(M − G) (M the previous direction),
    L_i ← L_i + G₍ᵢ₎G₍ᵢ₎ᵀ from ε I, P_i = L_i^(−1/2k) by SVD every
    ``preconditioning_compute_steps``, D = G ×₁ P_1 … ×ₖ P_k, M ← D,
    θ ← θ − η D (weight decay: λθ added to G, or decoupled). See
    :mod:`descentlab.rules.plain_shampoo`; for blocks, grafting and a decaying
    statistic use :class:`Shampoo`.

    Arguments, defaults and arithmetic are ``pytorch_optimizer.Shampoo``'s
    (float64 runs agree with it to rounding), including that the roots start
    at zero (with ``preconditioning_compute_steps`` > 1 the first steps do not
    move). Differences: the step is counted per parameter, ``param.grad`` is
    left alone, and under ``maximize`` with momentum the first step uses −g
    (the reference starts its buffer from g before negating it, so its first
    step is (2μ − 1)g).

    Args:
        lr: η (default 1e-3). momentum: μ (default 0). weight_decay: λ (default 0).
        weight_decouple: θ ← θ(1 − ηλ) (default False). fixed_decay: λ not scaled by η.
        preconditioning_compute_steps: (default 1). matrix_eps: ε (default 1e-6).
        maximize: maximise instead. engine, torch_options: see
        :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("plain_shampoo")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        weight_decouple: bool = False,
        fixed_decay: bool = False,
        preconditioning_compute_steps: int = 1,
        matrix_eps: float = 1e-6,
        maximize: bool = False,
        *,
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        super().__init__(params, locals(), engine=engine, **torch_options)
