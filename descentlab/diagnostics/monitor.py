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
adaptive methods), and — through forward hooks present only during that
step's forward pass — activation statistics (dead ReLU units) and the first
module producing a non-finite output. Detectors (:mod:`.detectors`) then turn
the record into :class:`~descentlab.diagnostics.findings.Finding` objects.

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

#: Steps between two full measurements. Chosen with benchmarks/monitor_overhead.py
#: so that the monitor costs at most 5% of the step time on a small MLP.
DEFAULT_INTERVAL = 10

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
    return all(
        bool(torch.isfinite(t).all())
        for t in _tensors(obj)
        if t.is_floating_point() or t.is_complex()
    )


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def _layers(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    out: dict[str, list[nn.Parameter]] = {}
    for name, module in model.named_modules():
        params = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if params:
            out[name or "<root>"] = params
    return out


class _Tracer:
    """Forward hooks recording the first non-finite output and ReLU statistics."""

    def __init__(self, model: nn.Module, activations: bool, force: bool = False):
        self.force = force
        self.first: tuple[str, nn.Module, bool] | None = None
        self.input_bad = False
        self.stats: dict[str, ActivationStats] = {}
        self.handles = [model.register_forward_pre_hook(self._pre)]
        for name, module in model.named_modules():
            self.handles.append(module.register_forward_hook(self._hook(name or "<root>")))
        self.activations = activations

    def _pre(self, module: nn.Module, args: Any) -> None:
        live = self.force or torch.is_grad_enabled()
        if live and self.first is None and not _all_finite(args):
            self.input_bad = True
            self.first = ("<input>", module, False)

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not (self.force or torch.is_grad_enabled()):
                return
            if self.first is None and not _all_finite(output):
                self.first = (name, module, _all_finite(args))
            if self.activations and isinstance(output, torch.Tensor) and output.dim() >= 1:
                with torch.no_grad():
                    o = output.detach()
                    dead = math.nan
                    if isinstance(module, _DEAD_TYPES) and o.dim() >= 2:
                        alive = (o > 0).flatten(2).any(-1) if o.dim() > 2 else o > 0
                        dead = 1.0 - float(alive.any(0).float().mean())
                    if isinstance(module, _DEAD_TYPES):
                        self.stats[name] = ActivationStats(
                            name,
                            float(o.mean()),
                            float(o.float().std()) if o.numel() > 1 else 0.0,
                            dead,
                        )

        return hook

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
    tracer = _Tracer(model, activations=False, force=True)
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
        track_activations: install forward hooks on monitored steps to
            collect ReLU statistics (dead units) as well as non-finite traces.
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
        self._layers = _layers(model)
        self._step = 0
        self._before: dict[str, list[torch.Tensor]] | None = None
        self._pending: Check | None = None
        self._tracer: _Tracer | None = None
        self._last_input: tuple[Any, Any] | None = None
        self._last_output: Any = None
        self._fresh_output = False
        self._handles = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
            model.register_forward_pre_hook(self._remember_input, with_kwargs=True),
            model.register_forward_hook(self._remember_output),
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
        if self._tracer is None:
            self._tracer = _Tracer(self.model, self.track_activations)

    def _disarm(self) -> _Tracer | None:
        tracer, self._tracer = self._tracer, None
        if tracer is not None:
            tracer.remove()
        return tracer

    def _remember_input(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        if torch.is_grad_enabled():
            self._last_input = (args, kwargs)

    def _remember_output(self, module: nn.Module, args: Any, output: Any) -> None:
        if torch.is_grad_enabled():
            self._last_output = output.detach() if isinstance(output, torch.Tensor) else output
            self._fresh_output = True

    def _check_output(self) -> None:
        """Every step, before the update: is the last training output finite?

        One reduction over the model output. When it is not, the forward pass
        is replayed on the same input with tracing hooks *before* the update
        spreads NaN into every layer, so the trace names the true producer.
        """
        out, fresh, self._fresh_output = self._last_output, self._fresh_output, False
        if out is None or not fresh or self.history.non_finite is not None:
            return
        if not _all_finite(out) and self._last_input is not None:
            args, kwargs = self._last_input
            trace = _replay(self.model, args, kwargs, self._step)
            if trace is not None:
                self.history.non_finite = trace

    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._check_output()
        self._last_input = None
        if not self._monitored(self._step):
            return
        in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
        layers: dict[str, LayerStats] = {}
        before: dict[str, list[torch.Tensor]] = {}
        not_in: list[str] = []
        finite = True
        with torch.no_grad():
            for name, params in self._layers.items():
                grads = [p.grad for p in params if p.grad is not None]
                if not grads:
                    continue
                for p in params:
                    if p.grad is not None and id(p) not in in_opt:
                        not_in.append(f"{name} {tuple(p.shape)}")
                pn = _norm(params)
                gn = _norm(grads)
                gnf = float(gn)
                finite = finite and math.isfinite(gnf)
                layers[name] = LayerStats(name, sum(p.numel() for p in params), float(pn), gnf)
                before[name] = [p.detach().clone() for p in params]
        self._before = before
        lrs = [float(g["lr"]) if "lr" in g else math.nan for g in optimizer.param_groups]
        self._pending = Check(self._step, layers, lrs, grads_finite=finite, not_in_optimizer=not_in)
        if not finite:
            self._arm()

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        step = self._step
        self._step += 1
        check, self._pending = self._pending, None
        if check is not None:
            with torch.no_grad():
                for name, old in (self._before or {}).items():
                    new = self._layers[name]
                    diff = [n - o for n, o in zip(new, old, strict=True)]
                    check.layers[name].update_norm = float(_norm(diff))
            self._before = None
        tracer = self._disarm() if self._tracer is not None else None
        if tracer is not None:
            self._absorb(tracer, step, check)
        if check is not None:
            self.history.checks.append(check)
            if len(self.history.checks) > 2 * self.keep_checks:  # amortised trimming
                del self.history.checks[: -self.keep_checks]
            for listener in self.listeners:
                listener(check)
            self.run_detectors()
        if (
            self._monitored(self._step)
            or self.history.non_finite is None
            and (
                (check is not None and not check.grads_finite)
                or (self.history.losses and not math.isfinite(self.history.losses[-1]))
            )
        ):
            self._arm()

    def _absorb(self, tracer: _Tracer, step: int, check: Check | None) -> None:
        if check is not None:
            check.activations = dict(tracer.stats)
        if self.history.non_finite is None:
            trace = _make_trace(step, self.model, tracer)
            if trace is not None:
                self.history.non_finite = trace

    # ------------------------------------------------------------------ records
    def record_loss(self, loss: float | torch.Tensor) -> None:
        """Record the training loss of the current step (call once per step).

        Non-finite losses arm the forward hooks, so the next forward pass
        traces the module that produces NaN/Inf.
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
                else:
                    self._arm()
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

        params = [p for ps in self._layers.values() for p in ps]
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
