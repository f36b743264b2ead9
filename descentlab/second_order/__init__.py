"""Closure-based second-order and line-search optimizers.

``LBFGS``, ``NewtonCG`` (line search or Steihaug trust region), ``NonlinearCG``
(FR, PR, PR+, HS, DY, HZ), ``LineSearchGD`` and ``PerturbedGD``; all are
``torch.optim.Optimizer`` subclasses used like ``torch.optim.LBFGS``:
``opt.step(closure)``.
"""

from descentlab.second_order.gd import LineSearchGD, PerturbedGD
from descentlab.second_order.lbfgs import LBFGS
from descentlab.second_order.newton_cg import NewtonCG
from descentlab.second_order.nonlinear_cg import NonlinearCG

__all__ = ["LBFGS", "LineSearchGD", "NewtonCG", "NonlinearCG", "PerturbedGD"]
