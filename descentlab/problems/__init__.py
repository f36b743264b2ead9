"""Fixed, versioned optimisation problems: analytic test functions and small learning tasks.

Every problem is a :class:`~descentlab.problems.base.Problem` (data, model,
batch size, step budget, target metric, split and seed, with a fingerprint);
``problem.build(seed)`` returns a :class:`~descentlab.problems.base.Task` that
any ``torch.optim.Optimizer`` can train.

Example::

    import torch
    from descentlab.problems import get_problem

    problem = get_problem("rosenbrock")
    task = problem.build(seed=0)
    opt = torch.optim.Adam(task.parameters(), lr=0.05)
    for _ in range(problem.steps):
        task.train_step(opt)
    print(task.evaluate())
"""

from descentlab.problems.base import KINDS, Problem, Task
from descentlab.problems.registry import (
    DEEP_SUITE,
    DEFAULT_SUITE,
    Suite,
    available_problems,
    available_suites,
    get_problem,
    get_suite,
    register,
    register_suite,
)

__all__ = [
    "DEEP_SUITE",
    "DEFAULT_SUITE",
    "KINDS",
    "Problem",
    "Suite",
    "Task",
    "available_problems",
    "available_suites",
    "get_problem",
    "get_suite",
    "register",
    "register_suite",
]
