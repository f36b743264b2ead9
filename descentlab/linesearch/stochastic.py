"""Stochastic Armijo line search for mini-batch training (Vaswani et al., 2019)."""

from __future__ import annotations

from descentlab.linesearch.backtracking import Armijo
from descentlab.optim.validation import check_int, check_positive

__all__ = ["StochasticArmijo"]


class StochasticArmijo(Armijo):
    r"""Armijo backtracking on one mini-batch, with the step carried between batches.

    At iteration ``k`` with mini-batch loss ``f_k`` and ``d = -grad f_k(w)``,
    accept the first ``eta`` with

    .. math:: f_k(w - \eta \nabla f_k(w)) \le f_k(w) - c\,\eta\,\|\nabla f_k(w)\|^2,

    trying ``eta_0, beta eta_0, beta^2 eta_0, ...``. The first trial of the next
    iteration is the previous accepted step times ``gamma ** (1 / batches_per_epoch)``
    (the paper's "reset option": ``eta <- eta * gamma^{b/n}``), capped at ``max_step``,
    so the step can grow back after a hard batch.

    The closure must evaluate the **same** mini-batch every time it is called
    within one optimizer step (draw the batch outside the closure).

    Use it with :class:`descentlab.second_order.LineSearchGD` (``lr`` is the first
    trial of the first iteration). When the budget runs out the search fails; the
    optimizer then keeps the parameters and moves on to the next batch.

    Args:
        c: sufficient-decrease constant; default 0.1 (the paper's experiments;
            its theory uses 1/2).
        beta: backtracking factor; default 0.9.
        gamma: growth base of the reset rule; default 2.0.
        batches_per_epoch: ``n / b``, mini-batches per epoch; default 1.
        max_step: cap on the step; default 10.
        max_evals: backtracking budget per iteration; default 100.

    Reference: S. Vaswani, A. Mishkin, I. Laradji, M. Schmidt, G. Gidel,
    S. Lacoste-Julien, "Painless Stochastic Gradient: Interpolation, Line-Search,
    and Convergence Rates", NeurIPS 2019, Alg. 1 and sec. 7.
    """

    name = "stochastic_armijo"

    def __init__(self, c: float = 0.1, beta: float = 0.9, gamma: float = 2.0,
                 batches_per_epoch: int = 1, max_step: float = 10.0,
                 max_evals: int = 100) -> None:
        check_positive("gamma", gamma)
        check_int("batches_per_epoch", batches_per_epoch, minimum=1)
        self.gamma = float(gamma)
        self.batches_per_epoch = batches_per_epoch
        super().__init__(c1=c, shrink=beta, interpolate=False,
                         growth=self.gamma ** (1.0 / batches_per_epoch), max_step=max_step,
                         max_evals=max_evals)

    @property
    def c(self) -> float:
        """The sufficient-decrease constant (same as ``c1``)."""
        return self.c1

    @property
    def beta(self) -> float:
        """The backtracking factor (same as ``shrink``)."""
        return self.shrink
