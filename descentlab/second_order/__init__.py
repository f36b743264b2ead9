"""Closure-based second-order and line-search optimizers.

``LBFGS``, ``NewtonCG`` (line search or Steihaug trust region), ``NonlinearCG``
(FR, PR, PR+, HS, DY, HZ), ``LineSearchGD`` and ``PerturbedGD``; all are
``torch.optim.Optimizer`` subclasses used like ``torch.optim.LBFGS``:
``opt.step(closure)``. ``SophiaH`` and ``AdaHessian`` precondition by a
Hutchinson estimate of the Hessian diagonal (``loss.backward(create_graph=True)``
then ``step()``, or ``step(closure)``; see :mod:`descentlab.second_order.hutchinson`).
"""

from descentlab.second_order.gd import LineSearchGD, PerturbedGD
from descentlab.second_order.lbfgs import LBFGS
from descentlab.second_order.newton_cg import NewtonCG
from descentlab.second_order.nonlinear_cg import NonlinearCG
from descentlab.second_order.sophia import AdaHessian, SophiaH

__all__ = ["LBFGS", "LineSearchGD", "NewtonCG", "NonlinearCG", "PerturbedGD", "SophiaH",
           "AdaHessian"]
