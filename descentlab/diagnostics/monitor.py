"""TrainingMonitor: attach to a model and optimizer with one call; get findings.

Usage::

    monitor = TrainingMonitor(model, optimizer)        # installs hooks
    for x, y in batches:
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()                                # hooks measure here
        monitor.record_loss(loss)                       # one float per step
    monitor.record_validation(val_loss)                 # whenever you evaluate
    print(monitor.summary())                            # or report.write_html(...)

Every ``interval`` optimizer steps (default :data:`DEFAULT_INTERVAL`) the
monitor measures, per layer (module owning parameters): parameter and
gradient norms before the step, the update norm of the step (hence the
update-to-parameter ratio and the effective learning rate ``‖Δθ‖/‖g‖`` of
adaptive methods), and — through forward hooks on ReLU modules present only
during that step's forward pass — the share of dead units. Detectors
(:mod:`.detectors`) then turn the record into
:class:`~descentlab.diagnostics.findings.Finding` objects.

Every step, one light hook on the model remembers the last training input
and output; before the optimizer applies an update, the output is screened
for NaN/Inf (one reduction). When it is not finite, the forward pass is
replayed on the same input with hooks on every module, so the first module
that produced a non-finite value is named *before* the update spreads NaN
into every layer.

Only the public ``torch.optim.Optimizer`` API is used (step pre/post hooks and
``param_groups``), so torch's optimizers and descentlab's work alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from descentlab.diagnostics.detectors import Detector, default_detectors
from descentlab.diagnostics.findings import Finding, FindingKind, Severity
from descentlab.diagnostics.records import (
    ActivationStats,
    Check,
    History,
    LayerStats,
    NonFiniteTrace,
)
from descentlab.optim.validation import check_int

__all__ = ["DEFAULT_INTERVAL", "TrainingMonitor", "trace_non_finite"]

#: Steps between two full measurements. Chosen with benchmarks/monitor_overhead.py:
#: a full measurement costs about 0.4-0.7 of a step (Python-side work on every
#: layer), and the hooks that run every step cost about 2% on a 2 ms step; at 100
#: the worst measured overhead (a 3-layer MLP) is about 3%, within the 5% goal.
DEFAULT_INTERVAL = 100

_DEAD_TYPES = (nn.ReLU, nn.ReLU6)


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _all_finite(obj: Any) -> bool:
    """Whether every floating-point tensor in ``obj`` is free of NaN and Inf.

    Tests the *sum* of each tensor (NaN and ±Inf propagate through it): one
    reduction and one synchronisation, several times cheaper than
    ``isfinite(t).all()``. A sum that overflows although every element is
    finite reads as non-finite; callers use this as a cheap screen and then
    locate the culprit element-wise.
    """
    if isinstance(obj, torch.Tensor) and obj.dtype in (torch.float32, torch.float64):
        return math.isfinite(float(obj.detach().sum()))  # the common case, kept short
    for t in _tensors(obj):
        if t.is_floating_point():
            total = t.detach().sum() if t.element_size() >= 4 else t.detach().float().sum()
            if not math.isfinite(float(total)):
                return False
        elif t.is_complex() and not bool(torch.isfinite(t).all()):
            return False
    return True


def _exactly_finite(obj: Any) -> bool:
    return all(
        bool(torch.isfinite(t).all())
        for t in _tensors(obj)
        if t.is_floating_point() or t.is_complex()
    )


def _norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Euclidean norm of each tensor, as one float32 vector (no host synchronisation).

    Uses the multi-tensor kernel behind ``torch.nn.utils.clip_grad_norm_``
    when available (one launch for all tensors), else one norm per tensor.
    """
    if not tensors:
        return torch.zeros(0)
    foreach = getattr(torch, "_foreach_norm", None)
    if foreach is not None:
        try:
            return torch.stack([n.float() for n in foreach(tensors)])
        except (RuntimeError, TypeError):
            pass
    return torch.stack([torch.linalg.vector_norm(t).float() for t in tensors])


def _per_layer(norms: torch.Tensor, segments: torch.Tensor, count: int) -> torch.Tensor:
    """Combine per-tensor norms (last dimension) into per-layer norms ``sqrt(Σ ‖t‖²)``."""
    out = torch.zeros(*norms.shape[:-1], count, dtype=norms.dtype, device=norms.device)
    return out.index_add_(-1, segments.to(norms.device), norms * norms).sqrt()


def _layers(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    out: dict[str, list[nn.Parameter]] = {}
    for name, module in model.named_modules():
        params = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if params:
            out[name or "<root>"] = params
    return out


class _Tracer:
    """Forward hooks on every module recording the first non-finite output (for replays)."""

    def __init__(self, model: nn.Module):
        self.first: tuple[str, nn.Module, bool] | None = None
        self.handles = [model.register_forward_pre_hook(self._pre)]
        for name, module in model.named_modules():
            self.handles.append(module.register_forward_hook(self._hook(name or "<root>")))

    def _pre(self, module: nn.Module, args: Any) -> None:
        if self.first is None and not _exactly_finite(args):
            self.first = ("<input>", module, False)

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.first is None and not _exactly_finite(output):
                self.first = (name, module, _exactly_finite(args))

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class _ReluProbe:
    """Forward hooks on ReLU modules, present only during a monitored step's forward pass.

    Records, per module, the share of units (features or channels) that are
    zero for every example of the batch; values stay on the device until
    :meth:`collect` (one synchronisation).
    """

    def __init__(self, modules: list[tuple[str, nn.Module]]):
        self.alive: dict[str, torch.Tensor] = {}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in modules]

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not torch.is_grad_enabled() or not isinstance(output, torch.Tensor):
                return
            if output.dim() >= 2 and name not in self.alive:
                with torch.no_grad():
                    o = output.detach()
                    active = (o > 0).flatten(2).any(-1) if o.dim() > 2 else o > 0
                    self.alive[name] = active.any(0).float().mean()

        return hook

    def collect(self) -> dict[str, ActivationStats]:
        if not self.alive:
            return {}
        values = torch.stack(list(self.alive.values())).tolist()
        return {n: ActivationStats(n, 1.0 - v) for n, v in zip(self.alive, values, strict=True)}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _make_trace(step: int, model: nn.Module, tracer: _Tracer) -> NonFiniteTrace | None:
    if tracer.first is None:
        return None
    name, module, inputs_finite = tracer.first
    params_finite = all(bool(torch.isfinite(p).all()) for p in module.parameters(recurse=False))
    if name == "<input>":
        what = "the model's input already contains NaN/Inf"
        return NonFiniteTrace(step, name, type(model).__name__, True, what)
    if not params_finite:
        what = "its parameters are non-finite (an earlier update blew them up)"
    elif inputs_finite:
        what = "its inputs were finite, its output is not (overflow or an invalid operation)"
    else:
        what = "its inputs were already non-finite: produced by code between modules"
    return NonFiniteTrace(step, name, type(module).__name__, params_finite, what)


def trace_non_finite(model: nn.Module, *args: Any, **kwargs: Any) -> NonFiniteTrace | None:
    """Run ``model(*args, **kwargs)`` once and return where NaN/Inf first appeared.

    Returns ``None`` when every output was finite. The model's buffers (e.g.
    BatchNorm running statistics) are left as they were. The first module, in
    execution order, whose output is non-finite is the producer; the trace
    says whether its inputs or its parameters were already non-finite.
    """
    return _replay(model, args, kwargs, -1)


def _replay(model: nn.Module, args: Any, kwargs: Any, step: int) -> NonFiniteTrace | None:
    """Run the model once more with tracing hooks; buffers (BatchNorm statistics) are restored."""
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    tracer = _Tracer(model)
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        tracer.remove()
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(buffers[k])
    return _make_trace(step, model, tracer)


class TrainingMonitor:
    """Records gradient norms, update ratios, effective learning rates and curves; finds problems.

    Args:
        model: the network being trained.
        optimizer: any ``torch.optim.Optimizer`` (torch's or descentlab's).
        interval: measure every ``interval`` optimizer steps (default
            :data:`DEFAULT_INTERVAL`; 1 measures every step).
        detectors: the detectors to run (default :func:`default_detectors`).
        track_activations: install forward hooks on ReLU modules during
            monitored steps to count dead units.
        on_finding: called with each new finding as it is made (e.g.
            ``print``), in addition to collecting it in :attr:`findings`.
        keep_checks: how many of the latest checks to keep in
            :attr:`history` (default 1000; loss values are all kept).

    The monitor installs optimizer step hooks at construction; call
    :meth:`detach` (or use it as a context manager) to remove them.
    Memory: on monitored steps the parameters are copied once to measure the
    update.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        interval: int = DEFAULT_INTERVAL,
        detectors: list[Detector] | None = None,
        track_activations: bool = True,
        on_finding: Callable[[Finding], None] | None = None,
        keep_checks: int = 1000,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        self.model = model
        self.optimizer = optimizer
        self.interval = check_int("interval", interval, minimum=1)
        self.detectors = default_detectors() if detectors is None else list(detectors)
        self.track_activations = bool(track_activations)
        self.on_finding = on_finding
        self.keep_checks = check_int("keep_checks", keep_checks, minimum=1)
        self.history = History()
        self.findings: list[Finding] = []
        self.counts: dict[FindingKind, int] = {}
        self.listeners: list[Callable[[Check], None]] = []
        layers = _layers(model)
        self._names = list(layers)
        self._params = [p for ps in layers.values() for p in ps]
        self._segments = torch.tensor(
            [i for i, ps in enumerate(layers.values()) for _ in ps], dtype=torch.long
        )
        self._numels = [sum(p.numel() for p in ps) for ps in layers.values()]
        self._relus = [(name, m) for name, m in model.named_modules() if isinstance(m, _DEAD_TYPES)]
        self._step = 0
        self._pending: tuple[Check, list[int], list[torch.Tensor]] | None = None
        self._ids_key: tuple[tuple[int, int], ...] = ()
        self._ids: set[int] = set()
        self._probe: _ReluProbe | None = None
        self._last_input: tuple[Any, Any] | None = None
        self._last_output: Any = None
        self._fresh_output = False
        self._handles = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
            model.register_forward_hook(self._remember, with_kwargs=True),
        ]
        self._arm()

    # ------------------------------------------------------------------ hooks
    @property
    def step(self) -> int:
        """Number of optimizer steps taken since the monitor was attached."""
        return self._step

    def _monitored(self, step: int) -> bool:
        return step % self.interval == 0

    def _arm(self) -> None:
        if self._probe is None and self.track_activations and self._relus:
            self._probe = _ReluProbe(self._relus)

    def _disarm(self) -> dict[str, ActivationStats]:
        probe, self._probe = self._probe, None
        if probe is None:
            return {}
        probe.remove()
        return probe.collect()

    def _remember(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if torch.is_grad_enabled():
            self._last_input = (args, kwargs)
            self._last_output = output.detach() if isinstance(output, torch.Tensor) else output
            self._fresh_output = True

    def _check_output(self) -> None:
        """Every step, before the update: is the last training output finite?

        One reduction over the model output. When it is not, the forward pass
        is replayed on the same input with tracing hooks on every module
        *before* the update spreads NaN into every layer, so the trace names
        the true producer.
        """
        out, fresh, self._fresh_output = self._last_output, self._fresh_output, False
        if out is None or not fresh or self.history.non_finite is not None:
            return
        if not _all_finite(out) and self._last_input is not None:
            args, kwargs = self._last_input
            trace = _replay(self.model, args, kwargs, self._step)
            if trace is not None:
                self.history.non_finite = trace

    def _optimizer_ids(self, optimizer: torch.optim.Optimizer) -> set[int]:
        key = tuple((id(g["params"]), len(g["params"])) for g in optimizer.param_groups)
        if self._ids_key != key:
            self._ids_key = key
            self._ids = {id(p) for g in optimizer.param_groups for p in g["params"]}
        return self._ids

    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._check_output()
        self._last_input = None
        if not self._monitored(self._step):
            return
        idx = [i for i, p in enumerate(self._params) if p.grad is not None]
        with torch.no_grad():
            params = [self._params[i].detach() for i in idx]
            grads = [self._params[i].grad for i in idx]
            seg = self._segments[idx]
            n = len(self._names)
            per_tensor = torch.stack([_norms(params), _norms(grads)])
            norms = _per_layer(per_tensor, seg, n).tolist()
            before = [p.clone() for p in params]
        in_opt = self._optimizer_ids(optimizer)
        with_grad = set(seg.tolist())
        not_in = [
            f"{self._names[int(self._segments[i])]} {tuple(self._params[i].shape)}"
            for i in idx
            if id(self._params[i]) not in in_opt
        ]
        layers = {
            name: LayerStats(name, self._numels[j], norms[0][j], norms[1][j])
            for j, name in enumerate(self._names)
            if j in with_grad
        }
        finite = all(math.isfinite(v) for v in norms[1])
        lrs = [float(g["lr"]) if "lr" in g else math.nan for g in optimizer.param_groups]
        check = Check(self._step, layers, lrs, grads_finite=finite, not_in_optimizer=not_in)
        self._pending = (check, idx, before)

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._step += 1
        pending, self._pending = self._pending, None
        activations = self._disarm()
        if pending is not None:
            check, idx, before = pending
            with torch.no_grad():
                torch._foreach_sub_(before, [self._params[i].detach() for i in idx])
                updates = _per_layer(_norms(before), self._segments[idx], len(self._names))
                for j, value in enumerate(updates.tolist()):
                    name = self._names[j]
                    if name in check.layers:
                        check.layers[name].update_norm = value
            check.activations = activations
            self.history.checks.append(check)
            if len(self.history.checks) > 2 * self.keep_checks:  # amortised trimming
                del self.history.checks[: -self.keep_checks]
            for listener in self.listeners:
                listener(check)
            self.run_detectors()
        if self._monitored(self._step):
            self._arm()

    # ------------------------------------------------------------------ records
    def record_loss(self, loss: float | torch.Tensor) -> None:
        """Record the training loss of the current step (call once per step).

        A non-finite loss from a finite model output is blamed on the loss
        computation; a non-finite output was already traced to its module
        before the optimizer step.
        """
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        self.history.steps.append(self._step)
        self.history.losses.append(value)
        if not math.isfinite(value):
            if self.history.non_finite is None:
                out = self._last_output
                if out is not None and _all_finite(out):
                    self.history.non_finite = NonFiniteTrace(
                        self._step,
                        "<loss>",
                        "loss function",
                        True,
                        "the model output is finite; the loss computation produced NaN/Inf",
                    )
            self.run_detectors()

    def record_validation(self, loss: float | torch.Tensor, step: int | None = None) -> None:
        """Record a validation loss (at ``step``, default the current step) and run detectors."""
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        self.history.val_steps.append(self._step if step is None else int(step))
        self.history.val_losses.append(value)
        self.run_detectors()

    def add_finding(self, finding: Finding) -> None:
        """Add a finding from outside the detectors (e.g. a curvature check).

        Each kind is kept once (its first occurrence; a later one with more
        evidence, such as the traced module of a non-finite value, replaces
        it); :attr:`counts` tells how many times it was seen.
        """
        self.counts[finding.kind] = self.counts.get(finding.kind, 0) + 1
        for i, old in enumerate(self.findings):
            if old.kind == finding.kind:
                if len(finding.evidence) > len(old.evidence):
                    self.findings[i] = finding
                return
        self.findings.append(finding)
        if self.on_finding is not None:
            self.on_finding(finding)

    def run_detectors(self) -> list[Finding]:
        """Run every detector on the history now; return the findings made by this run."""
        made = []
        for detector in self.detectors:
            f = detector(self.history)
            if f is not None:
                self.add_finding(f)
                made.append(f)
        return made

    def check_curvature(
        self,
        loss_fn: Callable[[], torch.Tensor],
        *,
        grad_tol: float = 1e-3,
        seed: int = 0,
    ) -> list[Finding]:
        """Look at the Hessian of ``loss_fn()`` now: saddle point and edge of stability.

        ``loss_fn`` computes the loss on a fixed batch at the current
        parameters. Runs :func:`~descentlab.diagnostics.curvature.saddle_check`
        (Lanczos: λ_min < 0 with a small gradient) and
        :func:`~descentlab.diagnostics.curvature.edge_of_stability` with the
        first parameter group's learning rate; findings are added to
        :attr:`findings` and returned.
        """
        from descentlab.diagnostics.curvature import (
            HessianOperator,
            edge_of_stability,
            extreme_eigenvalues,
            saddle_check,
        )

        params = self._params
        op = HessianOperator(loss_fn, params)
        made = []
        saddle = saddle_check(op, grad_tol=grad_tol, step=self._step, seed=seed)
        if saddle is not None:
            made.append(saddle)
            lmax = saddle.evidence["lambda_max"]
        else:
            lmax = extreme_eigenvalues(op, 1, which="largest", seed=seed)["largest"][0]
        lr = self.optimizer.param_groups[0].get("lr")
        if isinstance(lr, (int, float, torch.Tensor)) and float(lr) > 0 and lmax > 0:
            eos = edge_of_stability(lmax, float(lr), step=self._step)
            if eos is not None:
                made.append(eos)
        for f in made:
            self.add_finding(f)
        return made

    # ------------------------------------------------------------------ views
    def has(self, kind: FindingKind | str) -> bool:
        """Whether a finding of ``kind`` was made."""
        kind = FindingKind(kind)
        return any(f.kind == kind for f in self.findings)

    def worst(self) -> Severity | None:
        """The highest severity among the findings (``None`` when there are none)."""
        if not self.findings:
            return None
        return max((f.severity for f in self.findings), key=lambda s: s.rank)

    def layer_table(self) -> list[dict[str, float | str]]:
        """The latest check as rows: layer, ‖θ‖, ‖g‖, ρ, update ratio, effective lr."""
        if not self.history.checks:
            return []
        return [
            {
                "layer": st.name,
                "param_norm": st.param_norm,
                "grad_norm": st.grad_norm,
                "relative_gradient": st.relative_gradient,
                "update_ratio": st.update_ratio,
                "effective_lr": st.effective_lr,
            }
            for st in self.history.checks[-1].layers.values()
        ]

    def summary(self) -> str:
        """A plain-text summary (see :mod:`.report` for rich and HTML output)."""
        from descentlab.diagnostics.report import text_summary

        return text_summary(self)

    def to_dict(self) -> dict[str, Any]:
        """Findings, curves and the latest layer table as JSON-serialisable data."""
        return {
            "steps": self._step,
            "interval": self.interval,
            "findings": [f.to_dict() for f in self.findings],
            "counts": {k.value: v for k, v in self.counts.items()},
            "loss": {"steps": self.history.steps, "values": _finite_list(self.history.losses)},
            "validation": {
                "steps": self.history.val_steps,
                "values": _finite_list(self.history.val_losses),
            },
            "layers": [
                {
                    k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                    for k, v in r.items()
                }
                for r in self.layer_table()
            ],
        }

    # ------------------------------------------------------------------ lifetime
    def detach(self) -> None:
        """Remove every hook the monitor installed."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._disarm()

    def __enter__(self) -> TrainingMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()


def _finite_list(xs: list[float]) -> list[float | None]:
    return [x if math.isfinite(x) else None for x in xs]
