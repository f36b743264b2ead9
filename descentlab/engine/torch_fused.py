"""torch's own fused kernels, run on a flat buffer, for the rules torch has one for.

torch.optim's ``fused=True`` implementations of Adam/AdamW, SGD and Adagrad
are C++ kernels (``torch._fused_adam_``, ``torch._fused_adamw_``,
``torch._fused_sgd_``, ``torch._fused_adagrad_``) that take *lists* of
tensors. One flat buffer is one tensor, so a whole run of the flat engine
(normally every parameter of a group) is updated by one kernel call, with no
compilation and a few microseconds of overhead. The default engine
(:mod:`descentlab.engine.auto`) uses them where the rule and its flags have
a kernel here; the other engines never do.

The arithmetic is the kernel's, i.e. torch's ``fused=True`` path: each
element gets the bits torch's fused optimizer gives it, except the last
``numel mod vector width`` elements of each parameter, which torch's kernel
computes in its scalar tail loop and which sit inside a vector of the flat
buffer (they agree to rounding, one unit in the last place). Like the
compiled kernels, results therefore match the reference engine (torch's
for-loop arithmetic) to rounding, not bit for bit.

Which calls have a kernel (:data:`FUSED`, keyed by the exact rule class, so a
subclass that changes the update never runs a kernel meant for its parent):

* Adam/AdamW (``AdamRule``): every flag (coupled or decoupled weight decay,
  AMSGrad);
* SGD (``SGDRule``): torch's heavy-ball form (with or without momentum,
  dampening, Nesterov), not the averaged form;
* Adagrad (``AdagradRule``): every setting.

Set ``DESCENTLAB_TORCH_FUSED=0`` to keep the default engine off these kernels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from descentlab.engine.base import Run
from descentlab.engine.host_scalars import ThreadArrays
from descentlab.rules.adam import AdamRule
from descentlab.rules.adaptive import AdagradRule
from descentlab.rules.sgd import SGDRule

__all__ = ["FUSED", "fused_update", "has_fused"]

#: dtypes torch's CPU and CUDA fused kernels take
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_DEVICES = ("cpu", "cuda")


_HOST_STEP = ThreadArrays("f", scalar=True)


def _step(run: Run, param: Tensor) -> Tensor:
    """The (already advanced) step as the float32 tensor the kernels read, as torch keeps it.

    On the CPU a 0-dim view of a host array of this thread, written without a torch op.
    """
    if param.device.type != "cpu":
        return torch.full((), float(run.step), dtype=torch.float32, device=param.device)
    values, tensor = _HOST_STEP.get(1)
    values[0] = float(run.step)
    return tensor


def _adam(run: Run, param: Tensor, grad: Tensor, state: dict[str, Tensor]) -> None:
    h, flags = run.h, run.flags
    kernel = torch._fused_adamw_ if flags["weight_decay"] == "decoupled" else torch._fused_adam_
    amsgrad = bool(flags["amsgrad"])
    kernel(
        [param], [grad], [state["exp_avg"]], [state["exp_avg_sq"]],
        [state["max_exp_avg_sq"]] if amsgrad else [], [_step(run, param)],
        amsgrad=amsgrad, lr=h["lr"], beta1=h["beta1"], beta2=h["beta2"],
        weight_decay=h["weight_decay"] if flags["weight_decay"] else 0.0,
        eps=h["eps"], maximize=run.maximize,
    )


def _sgd(run: Run, param: Tensor, grad: Tensor, state: dict[str, Tensor]) -> None:
    h, flags = run.h, run.flags
    momentum = bool(flags["momentum"])
    torch._fused_sgd_(
        [param], [grad], [state["momentum_buffer"]] if momentum else [],
        weight_decay=h["weight_decay"] if flags["weight_decay"] else 0.0,
        momentum=h["momentum"] if momentum else 0.0, lr=h["lr"], dampening=h["dampening"],
        nesterov=bool(flags["nesterov"]), maximize=run.maximize,
        is_first_step=momentum and run.step == 1,
    )


def _adagrad(run: Run, param: Tensor, grad: Tensor, state: dict[str, Tensor]) -> None:
    h, flags = run.h, run.flags
    torch._fused_adagrad_(
        [param], [grad], [state["sum"]], [_step(run, param)],
        lr=h["lr"], lr_decay=h["lr_decay"],
        weight_decay=h["weight_decay"] if flags["weight_decay"] else 0.0,
        eps=h["eps"], maximize=run.maximize,
    )


#: rule class → (whether its flags have a kernel, the call)
FUSED: dict[type, tuple[Callable[[Run], bool], Callable[..., None]]] = {
    AdamRule: (lambda run: True, _adam),
    SGDRule: (lambda run: run.flags["form"] == "heavy_ball", _sgd),
    AdagradRule: (lambda run: True, _adagrad),
}


def has_fused(run: Run, param: Tensor) -> bool:
    """Whether torch has a fused kernel for this call (rule class, flags, dtype and device)."""
    entry = FUSED.get(type(run.rule))
    return (
        entry is not None
        and param.dtype in _DTYPES
        and param.device.type in _DEVICES
        and entry[0](run)
    )


def fused_update(
    run: Run, param: Tensor, grad: Tensor, state: dict[str, Tensor]
) -> None:
    """Update a 1-D run with torch's fused kernel (``grad`` as given: the kernel negates it
    under ``maximize``). Call only where :func:`has_fused` holds."""
    FUSED[type(run.rule)][1](run, param, grad, state)
