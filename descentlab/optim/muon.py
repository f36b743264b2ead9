"""Muon: orthogonalised momentum for the hidden weight matrices, AdamW for the rest."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from descentlab.optim.base import RuleOptimizer
from descentlab.rules import get_rule
from descentlab.rules.muon import NS_COEFFICIENTS

__all__ = ["Muon"]


class Muon(RuleOptimizer):
    r"""Muon (Jordan et al., 2024): momentum orthogonalised by Newton–Schulz, per weight matrix.

    For each 2-D parameter θ (m × n) with gradient g:

        B ← μ B + (1 − μ) g                          (B₀ = 0)
        D = g + μ (B − g)   (Nesterov, default)   or   D = B
        U = NS_k(D): X₀ = D/max(‖D‖_F, ε), then k times
            A = X Xᵀ,  X ← a X + (b A + c A²) X      ((a, b, c) = ns_coefficients)
        θ ← θ (1 − η λ) − η' U

    with η' = η √max(1, m/n) (``adjust_lr_fn=None`` or ``"original"``, Keller
    Jordan's) or η' = 0.2 η √max(m, n) (``"match_rms_adamw"``, Liu et al.
    2025, "Muon is scalable for LLM training": AdamW's learning rate and
    weight decay carry over). This is torch.optim.Muon's update; its
    docstring writes B ← μB + g, its code (and ours) the average above. The
    iteration runs in bfloat16 as in torch (``ns_dtype="float32"`` or
    ``"float64"`` for more precision).

    Muon is for the hidden layers' matrices. Other parameters — embeddings,
    the output head, norms, biases, anything not 2-D — go to AdamW groups of
    the same optimizer (``{"params": ..., "rule": "adamw"}``, which take
    torch.optim.AdamW's defaults unless given): build them with
    :func:`descentlab.muon_param_groups`. A parameter that is not 2-D in a
    Muon group is refused at construction, naming its shape.

    Speed: same-shape matrices that are neighbours in the flat buffer (the
    usual case: a model's blocks repeat) are orthogonalised together, as one
    batched product per Newton–Schulz step (``torch.bmm``), which gives each
    matrix the same bits as torch's per-matrix loop.

    Args:
        lr: η (default 1e-3). weight_decay: λ, decoupled (default 0.1).
        momentum: μ (default 0.95). nesterov: Nesterov momentum (default True).
        ns_coefficients: (a, b, c) (default (3.4445, −4.7750, 2.0315)).
        eps: floor of the norm (default 1e-7). ns_steps: k (default 5).
        adjust_lr_fn: ``None``/``"original"`` or ``"match_rms_adamw"``.
        ns_dtype: precision of the iteration, ``"bfloat16"`` (default),
            ``"float32"`` or ``"float64"``.
        maximize: maximise instead (an addition; torch's Muon has none).
        engine: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("muon")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        *,
        ns_dtype: str = "bfloat16",
        maximize: bool = False,
        engine: str = "auto",
    ) -> None:
        super().__init__(params, locals(), engine=engine)
