"""What every descentlab communication hook shares: its state, checks and saving.

A hook's state (:class:`CommState`) keeps, per parameter, the buffers its
algorithm carries from step to step (the residual of error feedback, DGC's
momentum and accumulation), the number of synchronised steps, and the
:class:`~descentlab.distributed.traffic.Traffic` counters.

Buffers are kept per *parameter*, not per bucket: DDP rebuilds its buckets
after the first iteration (the order of the parameters inside a bucket
changes to the order in which their gradients became ready), so a buffer laid
out like the first iteration's bucket would be added to the wrong entries
afterwards. Each bucket gets one contiguous buffer whose per-parameter
pieces are views; when a bucket's layout changes, the pieces are copied into
the new layout.

``state_dict()`` saves the buffers in the order in which the hook first saw
the parameters — the same order in every run of the same model and DDP
settings, which is what lets ``load_state_dict`` give them back to the right
parameters in a fresh process, so that a resumed run continues identically.
Each rank saves and loads its own state: residuals differ between ranks.

Checks, all raised before any gradient is exchanged: the process group's
backend (:data:`SUPPORTED_BACKENDS`), a saved state's world size and rank
against the running group's, the saved buffers' shapes against the model's
parameters (:func:`register_comm_hook`), and the hook's arguments (a
``GradBucket`` from DDP, a state of the hook's own class).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import Tensor

from descentlab.distributed.traffic import Traffic

__all__ = [
    "SUPPORTED_BACKENDS",
    "CommState",
    "check_density",
    "completed",
    "register_comm_hook",
]

#: Backends whose collectives the hooks use (all_gather / all_reduce of CPU or
#: device tensors). Tested here: gloo.
SUPPORTED_BACKENDS: tuple[str, ...] = ("gloo", "nccl")


def check_density(name: str, value: Any) -> float:
    """``value`` as a float in (0, 1], else ``ValueError`` naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def completed(tensor: Tensor) -> torch.futures.Future[Tensor]:
    """A Future that already holds ``tensor`` (the hooks finish their exchange synchronously)."""
    future: torch.futures.Future[Tensor] = torch.futures.Future()
    future.set_result(tensor)
    return future


def _check_backend(group: Any) -> None:
    name = str(dist.get_backend(group))
    parts = [part.split(":")[-1] for part in name.split(",")]
    unsupported = [p for p in parts if p not in SUPPORTED_BACKENDS]
    if unsupported:
        raise ValueError(
            f"descentlab communication hooks support the backends {list(SUPPORTED_BACKENDS)}; "
            f"the process group's backend is {name!r}"
        )


class CommState:
    """Base class of the hooks' states (see the module docstring).

    Subclasses set :attr:`buffer_names` (the per-parameter buffers they keep)
    and :attr:`hook_name`, and may extend :meth:`extra_state` /
    :meth:`load_extra_state` and :meth:`end_step`.

    Args:
        process_group: the group to exchange over; ``None`` is the default group.
    """

    buffer_names: ClassVar[tuple[str, ...]] = ("residual",)
    hook_name: ClassVar[str] = ""
    #: the hook function of this state, set by each hook's module
    hook: ClassVar[Callable[..., Any]]

    def __init__(self, process_group: Any = None) -> None:
        self.process_group = process_group
        self.step = 0
        self.traffic = Traffic()
        self.world_size = 0  # 0 and -1 until bound to a process group
        self.rank = -1
        self._position: dict[int, int] = {}  # id(parameter) -> first-seen position
        self._shapes: list[torch.Size] = []
        self._views: dict[str, list[Tensor]] = {name: [] for name in self.buffer_names}
        self._layouts: dict[int, tuple[int, ...]] = {}
        self._flats: dict[int, dict[str, Tensor]] = {}
        self._pending: dict[str, list[Tensor]] | None = None
        self._saved_world: tuple[int, int] | None = None
        if dist.is_available() and dist.is_initialized():
            self.bind()

    # -- checks -------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The settings the state was made with (saved for information)."""
        return {}

    def bind(self) -> None:
        """Check the backend and any loaded state against the running process group."""
        if not dist.is_initialized():
            raise RuntimeError(
                f"{type(self).__name__}: torch.distributed is not initialised "
                "(call torch.distributed.init_process_group first)"
            )
        _check_backend(self.process_group)
        self.world_size = dist.get_world_size(self.process_group)
        self.rank = dist.get_rank(self.process_group)
        if self._saved_world is not None:
            saved_world, saved_rank = self._saved_world
            if saved_world != self.world_size:
                raise ValueError(
                    f"{type(self).__name__}: the hook state was saved by a run with "
                    f"world_size={saved_world}, but this process group has "
                    f"world_size={self.world_size}"
                )
            if saved_rank != self.rank:
                raise ValueError(
                    f"{type(self).__name__}: the hook state was saved by rank {saved_rank} "
                    f"and is being loaded by rank {self.rank}; each rank loads its own state"
                )

    def begin(self, bucket: Any) -> None:
        """Check the hook's bucket argument (and bind on first use)."""
        if not isinstance(bucket, dist.GradBucket):
            raise TypeError(
                f"{self.hook_name} is a DistributedDataParallel communication hook: "
                f"register it with ddp_model.register_comm_hook(state, {self.hook_name}); "
                f"it was called with a {type(bucket).__name__}, not a GradBucket"
            )
        if not self.world_size:
            self.bind()

    def end(self, bucket: Any) -> None:
        """Finish a bucket; after the step's last bucket, count the step."""
        if bucket.is_last():
            self.end_step()
            self.step += 1

    def end_step(self) -> None:
        """Called once per synchronised step, after its last bucket (before ``step`` counts it)."""

    # -- per-parameter buffers laid out like a bucket --------------------------------------

    def _register(self, param: Tensor) -> int:
        key = id(param)
        if key in self._position:
            return self._position[key]
        position = len(self._shapes)
        self._position[key] = position
        self._shapes.append(param.shape)
        for name in self.buffer_names:
            value = None
            if self._pending is not None and position < len(self._pending[name]):
                value = self._pending[name][position]
                self._check_shape(name, position, value, param.shape)
            zeros = torch.zeros(param.shape, dtype=param.dtype, device=param.device)
            self._views[name].append(zeros if value is None else value.to(zeros))
        return position

    def _check_shape(self, name: str, position: int, value: Tensor, shape: torch.Size) -> None:
        if value.shape != shape:
            raise ValueError(
                f"{type(self).__name__}: saved buffer {name!r} #{position} has shape "
                f"{tuple(value.shape)}, but the parameter in that place has shape "
                f"{tuple(shape)} (a different model or DDP layout)"
            )

    def bucket_buffers(self, bucket: Any) -> dict[str, Tensor]:
        """This bucket's buffers, flat and laid out like ``bucket.buffer()``."""
        params = bucket.parameters()
        positions = tuple(self._register(p) for p in params)
        flats = self._flats
        if self._layouts.get(bucket.index()) != positions or bucket.index() not in flats:
            buffer = bucket.buffer()
            flats[bucket.index()] = {}
            for name in self.buffer_names:
                pieces = [self._views[name][i].reshape(-1) for i in positions]
                flat = torch.cat(pieces).to(buffer.dtype) if pieces else buffer.new_zeros(0)
                offset = 0
                for i in positions:
                    size = self._shapes[i].numel()
                    self._views[name][i] = flat[offset : offset + size].view(self._shapes[i])
                    offset += size
                flats[bucket.index()][name] = flat
            self._layouts[bucket.index()] = positions
        return flats[bucket.index()]

    # -- saving -----------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        """Subclass state beyond the buffers (e.g. the adapted threshold)."""
        return {}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved."""

    def state_dict(self) -> dict[str, Any]:
        """This rank's hook state: buffers, step, extra state, world size and rank."""
        if not self.world_size and dist.is_initialized():
            self.bind()
        return {
            "kind": type(self).__name__,
            "config": self.config(),
            "world_size": self.world_size,
            "rank": self.rank,
            "step": self.step,
            "extra": self.extra_state(),
            "buffers": {name: [t.detach().clone() for t in self._views[name]]
                        for name in self.buffer_names},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state saved by :meth:`state_dict` of the same class, world size and rank."""
        if state.get("kind") != type(self).__name__:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: the state was saved by "
                f"{state.get('kind')!r}"
            )
        if state["world_size"]:
            self._saved_world = (int(state["world_size"]), int(state["rank"]))
            if dist.is_initialized():
                self.bind()
        buffers = {name: list(state["buffers"][name]) for name in self.buffer_names}
        for name, saved in buffers.items():
            for position, value in enumerate(saved[: len(self._shapes)]):
                self._check_shape(name, position, value, self._shapes[position])
                self._views[name][position].copy_(value)
        self._pending = buffers
        self.step = int(state["step"])
        self.load_extra_state(state["extra"])

    def saved_shapes(self) -> list[torch.Size] | None:
        """Shapes of loaded buffers not yet matched to parameters (``None`` if nothing loaded)."""
        if self._pending is None:
            return None
        return [t.shape for t in self._pending[self.buffer_names[0]]]


def register_comm_hook(model: Any, state: CommState) -> None:
    """Register ``state``'s hook on a ``DistributedDataParallel`` model, checking first.

    Equivalent to ``model.register_comm_hook(state, hook)``, plus the checks
    that can be made before training: ``model`` is DDP, the backend is
    supported, a loaded state matches the world size, rank and the model's
    parameter shapes.
    """
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(model, DistributedDataParallel):
        raise TypeError(
            f"register_comm_hook needs a torch.nn.parallel.DistributedDataParallel model, "
            f"got {type(model).__name__}"
        )
    if not isinstance(state, CommState):
        raise TypeError(f"state must be a descentlab hook state, got {type(state).__name__}")
    state.bind()
    saved = state.saved_shapes()
    if saved is not None and saved:
        params = [p for p in model.module.parameters() if p.requires_grad]
        mine = sorted(tuple(p.shape) for p in params)
        if sorted(tuple(s) for s in saved) != mine:
            raise ValueError(
                f"{type(state).__name__}: the loaded hook state holds {len(saved)} buffers "
                f"whose shapes do not match this model's {len(params)} parameters"
            )
    model.register_comm_hook(state, type(state).hook)
