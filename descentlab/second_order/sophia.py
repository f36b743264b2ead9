r"""SophiaH and AdaHessian: steps preconditioned by a Hutchinson estimate of the Hessian diagonal.

Both take ``pytorch_optimizer``'s (4.1) arguments and state-dict keys, so code
written for it ports by renaming the import; the estimate, the ``hvp`` modes
and the probes are in :mod:`descentlab.second_order.hutchinson`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from descentlab.optim.validation import check_betas, check_interval, check_nonnegative
from descentlab.second_order.hutchinson import HutchinsonOptimizer

__all__ = ["SophiaH", "AdaHessian"]


class _DiagonalHessianOptimizer(HutchinsonOptimizer):
    """The hyperparameters SophiaH and AdaHessian share."""

    def check_group(self, group: dict[str, Any]) -> None:
        """Validate the group's hyperparameters."""
        super().check_group(group)
        check_betas(group["betas"])
        check_nonnegative("weight_decay", group["weight_decay"])
        check_nonnegative("eps", group["eps"])


class SophiaH(_DiagonalHessianOptimizer):
    r"""Sophia with the Hutchinson estimator (Liu, Li, Hall, Liang & Ma 2023, "Sophia").

    .. math::

        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
        h_t &= \beta_2 h_{t-k} + (1-\beta_2)\, \hat h_t
              \quad\text{every } k = \texttt{update\_period}\text{ steps (else } h_t = h_{t-1})\\
        \theta_t &= \theta_{t-1} - \eta\, \operatorname{clip}(m_t / \max(h_t, \epsilon),\; p)

    with :math:`\hat h = u \odot (H u)` (Hutchinson, Gaussian probes by
    default) and clip to :math:`[-p, p]` elementwise; decoupled weight decay
    :math:`\theta \leftarrow \theta(1 - \eta\lambda)` first. The paper writes
    the step as :math:`\eta'\operatorname{clip}(m / \max(\gamma h, \epsilon'), 1)`;
    that is this one with :math:`p = \gamma`, :math:`\eta = \eta'/\gamma`,
    :math:`\epsilon = \epsilon'/\gamma` (``pytorch_optimizer``'s form, used here).
    Where the curvature estimate is not positive the step is
    :math:`\pm\eta p` in the direction of the momentum (sign descent).
    Neither moment is bias-corrected (as in the paper).

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs, or of groups.
        lr: η (default 6e-2).
        betas: (β₁, β₂) (default (0.96, 0.99)).
        weight_decay: λ (default 0).
        weight_decouple: decoupled (default) or added to the gradient.
        fixed_decay: decoupled decay not scaled by the learning rate.
        p: the clip bound (default 1e-2).
        update_period: k, steps between Hessian estimates (default 10).
        num_samples: probes per estimate (default 1).
        hessian_distribution: ``"gaussian"`` (default) or ``"rademacher"``.
        eps: ε (default 1e-12).
        maximize: maximise the objective (the estimate is the loss's own Hessian).
        foreach: accepted for compatibility; ignored (steps use ``torch._foreach_*``).
        hvp: ``"auto"``, ``"autograd"`` or ``"finite_difference"`` (see
            :mod:`~descentlab.second_order.hutchinson`).

    State per parameter: ``momentum``, ``hessian_moment`` and the last estimate ``hessian``.
    """

    state_keys = ("momentum", "hessian_moment")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 6e-2,
        betas: tuple[float, float] = (0.96, 0.99),
        weight_decay: float = 0.0,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
        p: float = 1e-2,
        update_period: int = 10,
        num_samples: int = 1,
        hessian_distribution: str = "gaussian",
        eps: float = 1e-12,
        maximize: bool = False,
        foreach: bool | None = None,
        hvp: str = "auto",
    ) -> None:
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay,
                        weight_decouple=bool(weight_decouple), fixed_decay=bool(fixed_decay),
                        p=p, eps=eps, foreach=foreach)
        super().__init__(params, defaults, update_period=update_period,
                         num_samples=num_samples, hessian_distribution=hessian_distribution,
                         maximize=maximize, hvp=hvp)

    def check_group(self, group: dict[str, Any]) -> None:
        """Validate the group's hyperparameters."""
        super().check_group(group)
        check_nonnegative("p", group["p"])

    def update(
        self,
        group: dict[str, Any],
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        states: list[dict[str, torch.Tensor]],
        hessian: list[torch.Tensor] | None,
    ) -> None:
        """Momentum, Hessian moment on estimate steps, then the clipped step."""
        beta1, beta2 = group["betas"]
        momentum = [s["momentum"] for s in states]
        moment = [s["hessian_moment"] for s in states]
        torch._foreach_lerp_(momentum, grads, 1.0 - beta1)
        if hessian is not None:
            torch._foreach_lerp_(moment, hessian, 1.0 - beta2)
        ratio = torch._foreach_clamp_min(moment, group["eps"])
        ratio = torch._foreach_div(momentum, ratio)
        torch._foreach_clamp_min_(ratio, -group["p"])
        torch._foreach_clamp_max_(ratio, group["p"])
        torch._foreach_add_(params, ratio, alpha=-group["lr"])


class AdaHessian(_DiagonalHessianOptimizer):
    r"""AdaHessian (Yao et al. 2021, "ADAHESSIAN"): Adam on a Hutchinson Hessian diagonal.

    .. math::

        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
        v_t &= \beta_2 v_{t-k} + (1-\beta_2)\, \hat h_t^2
              \quad\text{every } k = \texttt{update\_period}\text{ steps (else } v_t = v_{t-1})\\
        \theta_t &= \theta_{t-1} - \frac{\eta}{1-\beta_1^t}\,
              \frac{m_t}{(v_t / (1-\beta_2^t))^{\kappa/2} + \epsilon}

    with :math:`\hat h = u \odot (H u)` (Rademacher probes by default) and
    :math:`\kappa` = ``hessian_power``; decoupled weight decay first. As in
    ``pytorch_optimizer`` the estimate is not spatially averaged over
    convolution kernels (the paper's variant for 4-D weights).

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs, or of groups.
        lr: η (default 1e-1).
        betas: (β₁, β₂) (default (0.9, 0.999)).
        weight_decay: λ (default 0).
        weight_decouple: decoupled (default) or added to the gradient.
        fixed_decay: decoupled decay not scaled by the learning rate.
        hessian_power: κ in (0, 1] (default 1).
        update_period: k, steps between Hessian estimates (default 1).
        num_samples: probes per estimate (default 1).
        hessian_distribution: ``"rademacher"`` (default) or ``"gaussian"``.
        eps: ε (default 1e-16).
        maximize: maximise the objective (the estimate is the loss's own Hessian).
        foreach: accepted for compatibility; ignored (steps use ``torch._foreach_*``).
        hvp: ``"auto"``, ``"autograd"`` or ``"finite_difference"`` (see
            :mod:`~descentlab.second_order.hutchinson`).

    State per parameter: ``exp_avg``, ``exp_hessian_diag_sq`` and the last estimate ``hessian``.
    """

    state_keys = ("exp_avg", "exp_hessian_diag_sq")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-1,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
        hessian_power: float = 1.0,
        update_period: int = 1,
        num_samples: int = 1,
        hessian_distribution: str = "rademacher",
        eps: float = 1e-16,
        maximize: bool = False,
        foreach: bool | None = None,
        hvp: str = "auto",
    ) -> None:
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay,
                        weight_decouple=bool(weight_decouple), fixed_decay=bool(fixed_decay),
                        hessian_power=hessian_power, eps=eps, foreach=foreach)
        super().__init__(params, defaults, update_period=update_period,
                         num_samples=num_samples, hessian_distribution=hessian_distribution,
                         maximize=maximize, hvp=hvp)

    def check_group(self, group: dict[str, Any]) -> None:
        """Validate the group's hyperparameters."""
        super().check_group(group)
        check_interval("hessian_power", group["hessian_power"], 0.0, 1.0, low_closed=False)

    def update(
        self,
        group: dict[str, Any],
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        states: list[dict[str, torch.Tensor]],
        hessian: list[torch.Tensor] | None,
    ) -> None:
        """First moment, squared-Hessian moment on estimate steps, then the Adam-like step."""
        beta1, beta2 = group["betas"]
        step = group["step"]
        exp_avg = [s["exp_avg"] for s in states]
        exp_h2 = [s["exp_hessian_diag_sq"] for s in states]
        torch._foreach_lerp_(exp_avg, grads, 1.0 - beta1)
        if hessian is not None:
            torch._foreach_mul_(exp_h2, beta2)
            torch._foreach_addcmul_(exp_h2, hessian, hessian, value=1.0 - beta2)
        denom = torch._foreach_div(exp_h2, 1.0 - beta2**step)
        torch._foreach_pow_(denom, group["hessian_power"] / 2.0)
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(params, exp_avg, denom, value=-group["lr"] / (1.0 - beta1**step))
