"""What the advisor returns: an optimizer, its settings, a schedule, the evidence, and code."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from descentlab.advisor.portfolio import PORTFOLIO, Candidate, make_candidate_optimizer
from descentlab.diagnostics.findings import Finding

__all__ = ["Evidence", "Recommendation"]


@dataclass
class Evidence:
    """What the advice rests on.

    Attributes:
        budget: gradient evaluations allowed (``budget × steps``).
        spent: evaluations spent, by phase (range tests included).
        skipped: candidates not tried and why.
        noise: the gradient-noise probe (``None`` when the budget was too small).
        range_tests: one per candidate with a learning-rate range test.
        rungs: the successive-halving rungs, each a list of runs.
        findings: diagnostics of the chosen candidate's short run.
        curvature: λ_max of the Hessian at the start, if it was measured.
        lr_checks: the winner's runs at a lower rate (the learning-rate check).
    """

    budget: int
    spent: dict[str, int]
    skipped: dict[str, str]
    noise: Any
    range_tests: list[Any]
    rungs: list[list[Any]]
    findings: list[Finding]
    curvature: float | None = None
    lr_checks: list[Any] = field(default_factory=list)

    @property
    def total_spent(self) -> int:
        """All evaluations spent."""
        return sum(self.spent.values())

    def tried(self) -> list[str]:
        """Names of the candidates that were run."""
        return [r.candidate for r in self.rungs[0]] if self.rungs else []

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        noise = None if self.noise is None else {
            "batches": self.noise.batches, "ratio": _num(self.noise.ratio),
            "mean_norm": self.noise.mean_norm}
        return {
            "budget": self.budget, "spent": dict(self.spent), "total_spent": self.total_spent,
            "skipped": dict(self.skipped), "noise": noise,
            "range_tests": [t.to_dict() for t in self.range_tests],
            "rungs": [[r.to_dict() for r in rung] for rung in self.rungs],
            "findings": [f.to_dict() for f in self.findings], "curvature": self.curvature,
            "lr_checks": [r.to_dict() for r in self.lr_checks],
        }


def _num(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def _literal(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_literal(v) for v in value) + ")"
    return repr(value)


@dataclass
class Recommendation:
    """An optimizer and its settings for a training run of ``steps`` steps.

    Attributes:
        optimizer: registry name for :func:`descentlab.make_optimizer`
            (``"lbfgs"``: :class:`descentlab.LBFGS`).
        candidate: the portfolio candidate it came from (``"adamw"``, ``"momentum"``, …).
        hyperparameters: keyword arguments of the optimizer, ``lr`` included.
        schedule: ``{"kind", "peak_lr", "warmup_steps", "total_steps"}`` or ``None``;
            ``kind`` is ``"warmup_cosine"``, ``"warmup"`` (then constant) or
            ``"warmup_average"`` (constant, and ``"average_from"``: average the
            iterates after every step ``> average_from`` and use the average; see
            :meth:`average_model`).
        clip_grad_norm: the total gradient norm to clip to, or ``None``.
        steps: the training budget the advice is for.
        metric, higher_is_better: what was optimised.
        reasons: each choice with its reason, in words.
        confidence: in [0, 1] (see :func:`descentlab.advise`); ``confidence_label``
            is "low", "medium" or "high".
        evidence: what was tried, the curves and the findings.
        expected: the chosen candidate's metric at the end of its longest short run.
    """

    optimizer: str
    candidate: str
    hyperparameters: dict[str, Any]
    schedule: dict[str, Any] | None
    clip_grad_norm: float | None
    steps: int
    metric: str
    higher_is_better: bool
    reasons: list[str]
    confidence: float
    evidence: Evidence
    expected: float
    problem: str = "user task"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def confidence_label(self) -> str:
        """"low" (< 0.33), "medium" or "high" (≥ 0.66)."""
        return "high" if self.confidence >= 0.66 else "medium" if self.confidence >= 0.33 \
            else "low"

    @property
    def lr(self) -> float:
        """The (peak) learning rate."""
        return float(self.hyperparameters["lr"])

    @property
    def average_from(self) -> int | None:
        """Under tail averaging, the step after which the iterates are averaged (the
        average of the iterates after steps ``average_from + 1, …, steps`` is the
        result); ``None`` without averaging."""
        return None if self.schedule is None else self.schedule.get("average_from")

    def as_candidate(self) -> Candidate:
        """The portfolio candidate with the advised schedule kind."""
        base = next(c for c in PORTFOLIO if c.name == self.candidate).resolved(self.optimizer)
        return base if self.schedule is None else replace(base, schedule=self.schedule["kind"])

    def average_model(self, model: nn.Module) -> AveragedModel | None:
        """``torch.optim.swa_utils.AveragedModel(model)`` (a uniform running mean) under tail
        averaging, else ``None``: call ``average.update_parameters(model)`` after every
        optimizer step after step :attr:`average_from`, and evaluate, save and deploy
        ``average.module``."""
        return None if self.average_from is None else AveragedModel(model)

    def make_optimizer(self, params: Any) -> torch.optim.Optimizer:
        """The recommended optimizer over ``params`` (for Muon: pass the model itself)."""
        model = params if isinstance(params, nn.Module) else None
        if model is not None and self.as_candidate().needs != "hidden_matrices":
            params = model.parameters()
        return make_candidate_optimizer(self.as_candidate(), params, self.lr, model)

    def attach_schedule(self, optimizer: torch.optim.Optimizer) -> Any:
        """Attach the recommended schedule; returns the controller (step it after every
        ``optimizer.step()``), or ``None`` when there is no schedule."""
        if self.schedule is None:
            return None
        from descentlab.advisor.measure import schedule_for
        from descentlab.schedules import attach

        relative = len(optimizer.param_groups) > 1
        s = self.schedule
        fraction = s["warmup_steps"] / s["total_steps"]
        sched = schedule_for(self.as_candidate(), 1.0 if relative else s["peak_lr"],
                             s["total_steps"], fraction)
        return None if sched is None else attach(optimizer, lr=sched, relative=relative)

    def code(self) -> str:
        """A ready-to-paste training loop; it expects ``model``, ``loss_fn`` and
        ``next_batch()`` (returning ``(inputs, targets)``) to exist."""
        kwargs = ", ".join(f"{k}={_literal(v)}" for k, v in self.hyperparameters.items()
                           if k != "lr")
        lr = f"lr={self.lr:.4g}"
        args = lr + (", " + kwargs if kwargs else "")
        lines = ["import torch", "import descentlab"]
        if self.optimizer == "lbfgs":
            make = f"optimizer = descentlab.LBFGS(model.parameters(), {args})"
        elif self.as_candidate().needs == "hidden_matrices":
            make = (f"optimizer = descentlab.make_optimizer({self.optimizer!r}, "
                    f"descentlab.muon_param_groups(model, {lr}){', ' + kwargs if kwargs else ''})")
        else:
            make = (f"optimizer = descentlab.make_optimizer({self.optimizer!r}, "
                    f"model.parameters(), {args})")
        s = self.schedule
        if s is not None:
            if s["kind"] == "warmup_cosine":
                lines.append("from descentlab.schedules import attach, warmup_cosine")
                sched = (f"schedule = attach(optimizer, lr=warmup_cosine({s['peak_lr']:.4g}, "
                         f"warmup_steps={s['warmup_steps']}, total_steps={s['total_steps']}))")
            else:
                lines.append("from descentlab.schedules import Warmup, attach")
                lines.append("from descentlab.schedules.base import Constant")
                sched = (f"schedule = attach(optimizer, lr=Warmup(Constant({s['peak_lr']:.4g}), "
                         f"{s['warmup_steps']}))")
        start = self.average_from
        if start is not None:
            lines.append("from torch.optim.swa_utils import AveragedModel")
        lines += ["", f"# advised by descentlab for {self.steps} steps ({self.candidate}; "
                  f"confidence {self.confidence_label})", make]
        if s is not None:
            lines.append(sched)
        if start is not None:
            lines.append(f"average = AveragedModel(model)  # the mean of the iterates after "
                         f"steps {start + 1}..{self.steps}")
        swap = self.candidate == "schedule_free"
        if swap:
            lines.append("optimizer.train()  # Schedule-Free: call optimizer.eval() before "
                         "evaluating or saving")
        clip = ("" if self.clip_grad_norm is None else
                f"torch.nn.utils.clip_grad_norm_(model.parameters(), "
                f"max_norm={self.clip_grad_norm:.4g})")
        lines.append(f"for step in range({self.steps}):")
        lines.append("    inputs, targets = next_batch()")
        if self.optimizer == "lbfgs":
            lines += [
                "",
                "    def closure():",
                "        optimizer.zero_grad()",
                "        loss = loss_fn(model(inputs), targets)",
                "        loss.backward()",
                *([f"        {clip}"] if clip else []),
                "        return loss",
                "",
                "    optimizer.step(closure)",
            ]
        else:
            lines += [
                "    optimizer.zero_grad()",
                "    loss = loss_fn(model(inputs), targets)",
                "    loss.backward()",
                *([f"    {clip}"] if clip else []),
                "    optimizer.step()",
            ]
        if s is not None:
            lines.append("    schedule.step()")
        if start is not None:
            lines += [f"    if step >= {start}:", "        average.update_parameters(model)",
                      "model.load_state_dict(average.module.state_dict())  # use the average"]
        if swap:
            lines.append("optimizer.eval()")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (the evidence included)."""
        return {
            "problem": self.problem, "optimizer": self.optimizer, "candidate": self.candidate,
            "hyperparameters": {k: list(v) if isinstance(v, tuple) else v
                                for k, v in self.hyperparameters.items()},
            "schedule": self.schedule, "clip_grad_norm": self.clip_grad_norm,
            "steps": self.steps, "metric": self.metric, "higher_is_better": self.higher_is_better,
            "reasons": list(self.reasons), "confidence": self.confidence,
            "confidence_label": self.confidence_label, "expected": _num(self.expected),
            "evidence": self.evidence.to_dict(),
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def summary(self) -> str:
        """A few lines of plain text: the choice, the reasons and the budget spent."""
        ev = self.evidence
        lines = [f"{self.problem}: {self.candidate} ({self.optimizer}) lr={self.lr:.4g}"
                 + ("" if self.schedule is None else f", {self.schedule['kind']} "
                    f"(warm-up {self.schedule['warmup_steps']} of {self.steps} steps"
                    + ("" if self.average_from is None else
                       f", averaged after step {self.average_from}") + ")")
                 + ("" if self.clip_grad_norm is None else f", clip {self.clip_grad_norm:.3g}"),
                 f"confidence {self.confidence:.2f} ({self.confidence_label}); spent "
                 f"{ev.total_spent} of {ev.budget} allowed gradient evaluations "
                 f"({ev.total_spent / self.steps:.0%} of {self.steps} steps)"]
        lines += [f"- {r}" for r in self.reasons]
        return "\n".join(lines)
