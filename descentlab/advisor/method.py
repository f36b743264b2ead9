r"""The advisor's method: a measured portfolio within ``budget × steps`` gradient evaluations.

1. **Budget.** ``B = ⌊budget · steps⌋`` gradient evaluations in all; every
   one is counted (:class:`~descentlab.advisor.measure.Budget`). Fewer than
   :data:`MIN_EVALUATIONS` is refused before any work.
2. **Gradient noise and curvature** (when ``B ≥ 60``): ``k = min(8, max(3, ⌊B/25⌋))``
   batch gradients at the start give the noise-to-signal ratio ρ. Noisy
   gradients (ρ > 0) take L-BFGS out of the portfolio. When momentum SGD is
   still among the range-tested candidates of step 3 after setting aside
   13 evaluations, six power-iteration steps on Hessian-vector products
   (each counted as two evaluations) give the sharpness λ_max, where the task
   lets a loss on fixed data be formed
   (:func:`~descentlab.advisor.measure.sharpness`); only momentum's rate uses
   it (step 6), so without momentum the 13 go to the learning rate instead.
3. **Range tests**: each of the ``n`` candidates with a learning-rate range
   gets ``r = min(40, ⌊0.5·B'/n⌋)`` steps (``B'`` what is left); while
   ``r < 30`` and ``n > 1``, the last candidate of the priority order is
   dropped. A sweep over four decades in fewer steps suggests rates several
   times too high, because the loss lags behind the rate (on digits_mlp,
   AdamW's "minimum/10" suggestion is 0.1 after 6 steps, 0.038 after 20 and
   0.015 after 40). A candidate left alone, without L-BFGS beside it, gets
   ``r = min(40, B')`` steps (30 when step 5's check fits): with nothing to
   compare, the evaluations go where they decide the most, its learning rate.
4. **Successive halving** (Jamieson & Talwalkar 2016) with the rest: every
   candidate trains from scratch for ``s`` evaluations with its schedule
   compressed to that length, the better half goes on to a rung twice as
   long, until one is left; ``s`` is the largest that fits what is left.
   Ranking is by the final metric; a diverged run ranks last. A candidate
   left alone gets one short run for the diagnostics of step 6 when at
   least 10 evaluations are left, and none otherwise (then its settings are
   the defaults of step 6, without findings).
5. **Learning-rate check.** A range test this short errs high (the loss lags
   behind the rate), and ranking optimizers says nothing about the rate. So
   the winner (when it has a range test) is trained once more from scratch at
   a third of its rate, for as many evaluations as its last run, whenever
   that many are left and it is at least :data:`CHECK_MIN`; the lower rate is
   taken only when its run ends better. A candidate measured alone reserves
   this check when ``B' ≥ 30 + 2·CHECK_MIN``: its range test then gets 30
   steps, and the rest is split evenly between its run at the suggested rate
   and the check. (On the character transformer, 60 evaluations: a 40-step
   range test suggested 0.062, and AdamW at 0.062 for the full 300 steps ends
   at validation loss 2.69, at 0.02 at 2.48; in 12-step runs 0.02 is ahead
   of 0.06 already, 3.07 against 3.13.)
6. **Settings from diagnostics** (each with its reason, in ``reasons``):
   - *learning rate*: the winner's range-test suggestion, or a third of it
     after step 5; halved if its longest run shows the ``oscillation`` finding.
   - *warm-up*: AlgoPerf's 2% of the steps; 5% when ρ > 1 (one batch's
     gradient is mostly noise, so early steps are unreliable); 10% when the
     learning rate is within 3× of where the range test diverged (close to
     the edge of stability, where warm-up lets sharpness fall first, Gilmer
     et al. 2022). None for L-BFGS.
   - *schedule*: cosine decay to 0 after the warm-up (AlgoPerf's baseline
     recipe; decay removes the noise floor of stochastic gradients);
     Schedule-Free keeps the rate constant (its averaging replaces decay);
     L-BFGS has none. *Tail averaging* instead of the cosine, decided from the
     problem's structure before anything is trained: when the gradients are
     stochastic (mini-batches, or ρ > 0) and the loss on fixed data is
     quadratic in the parameters (measured: five forward passes along a
     random line, :func:`~descentlab.advisor.measure.is_quadratic`; least
     squares on a linear model, a noisy quadratic), every candidate with a
     cosine runs at a constant rate after the warm-up and is evaluated, and
     returned, at the uniform average of its iterates over the last half of
     the steps. There this is the method theory recommends: averaged
     constant-step SGD attains the optimal O(d/T) rate for least squares
     (Bach & Moulines 2013; the last half: Rakhlin, Shamir & Sridharan 2012;
     tail averaging, Jain et al. 2018), and averaging loses only a constant
     factor when the step is off by a constant factor (Nemirovski, Juditsky,
     Lan & Shapiro 2009) — what a short range test leaves. For other losses a
     constant step's average stays O(step) away from the optimum (Bach &
     Moulines 2013; Dieuleveut, Durmus & Bach 2020), so they keep the decay.
   - *clipping*: when the gradient norm of the winner's longest run jumps
     above 10× its median (or the ``exploding_gradients``/``divergence``
     findings fire), clip to 2× the median norm; otherwise none. Never for
     L-BFGS: its gradient norm falls by orders of magnitude as it converges
     (on Beale its 14-evaluation run "jumped" to 27× the median, 105 against
     3.9), and clipped gradients break its line search's Wolfe conditions
     (Beale, seed 2, clipped at 2× that median: 8.3 instead of 0 after 300
     evaluations).
   - *curvature*: heavy-ball momentum is stable on a quadratic only for
     lr < 2(1+μ)/λ_max; momentum SGD's learning rate is capped at half that
     bound, and warm-up is 10% when the chosen rate is above a quarter of it.
7. **Confidence** ``c = min(1, gap/0.1) · 0.75^w``: ``gap`` is the winner's
   lead over the runner-up in the last rung (relative for losses, in units of
   1 accuracy point ×10 for accuracies), ``w`` the number of warnings found
   in its run; a portfolio of one gets 0.3 at most, 0.2 without a short run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from descentlab.advisor.measure import (
    Budget,
    RunResult,
    average_from,
    gradient_noise,
    is_quadratic,
    range_test,
    sharpness,
    short_run,
)
from descentlab.advisor.portfolio import Candidate, build_portfolio
from descentlab.advisor.recommendation import Evidence, Recommendation
from descentlab.advisor.setup import AdviseSetup
from descentlab.diagnostics.detectors import (
    DivergenceDetector,
    OscillationDetector,
    PlateauDetector,
)
from descentlab.diagnostics.findings import Finding, FindingKind, Severity
from descentlab.diagnostics.records import History

__all__ = ["CHECK_FACTOR", "CHECK_MIN", "MIN_EVALUATIONS", "RANGE_STEPS", "advise_setup",
           "halving_plan", "range_steps", "tail_averaging"]

MIN_EVALUATIONS = 12
"""The fewest gradient evaluations (``budget × steps``) the advisor works with."""

RANGE_STEPS = (30, 40)
"""Fewest and most steps of a range test while several candidates share the budget."""

ALONE_RUN_MIN = 10
"""A candidate measured alone gets a short run only when this many evaluations are left."""

CURVATURE_ITERATIONS = 6
"""Power-iteration steps of the sharpness probe."""

CURVATURE_COST = 1 + 2 * CURVATURE_ITERATIONS
"""Most evaluations the sharpness probe spends (a gradient with its graph, two per product)."""

CHECK_FACTOR = 1 / 3
"""The learning-rate check trains the winner at this multiple of its range test's rate."""

CHECK_MIN = 10
"""The fewest evaluations of a learning-rate check run (and of the run it is compared with)."""


def range_steps(left: int, tested: int, alone: bool) -> int:
    """Steps of each of ``tested`` range tests with ``left`` evaluations left (see step 3)."""
    if alone:
        return min(RANGE_STEPS[1], left)
    return min(RANGE_STEPS[1], math.floor(0.5 * left / tested))


def halving_plan(n: int, available: int) -> tuple[int, list[int]]:
    """``(s, survivors)``: first-rung length ``s`` and candidates per rung, for ``n`` candidates.

    Rung ``i`` runs ``survivors[i]`` candidates for ``s·2^i`` evaluations each;
    ``s`` is the largest that keeps the total within ``available``.
    """
    survivors = [n]
    while survivors[-1] > 1:
        survivors.append(math.ceil(survivors[-1] / 2))
    if n > 1:
        survivors.pop()  # the last rung picks the winner among two or more
    units = sum(k * 2**i for i, k in enumerate(survivors))
    return available // units, survivors


def _history(run: RunResult, metric_is_loss: bool) -> History:
    h = History(steps=list(range(1, len(run.losses) + 1)), losses=list(run.losses))
    if metric_is_loss:
        h.val_steps = [s for s, _ in run.curve]
        h.val_losses = [v for _, v in run.curve]
    return h


def _findings(run: RunResult, metric_is_loss: bool) -> list[Finding]:
    h = _history(run, metric_is_loss)
    found = []
    window = max(5, min(20, len(run.losses) // 2))
    for det in (DivergenceDetector(), OscillationDetector(window=window),
                PlateauDetector(patience=3, window=max(5, len(run.losses) // 10))):
        f = det(h)
        if f is not None:
            found.append(f)
    return found


def _gap(a: float, b: float, setup: AdviseSetup) -> float:
    if not math.isfinite(b):
        return 1.0
    if setup.metric.endswith("accuracy"):
        return abs(a - b) * 10
    return abs(a - b) / max(abs(b), 1e-12)


def advise_setup(
    setup: AdviseSetup, *, budget: float, seed: int = 0,
    candidates: Iterable[str] | None = None, progress: Any = None,
) -> Recommendation:
    """Advise on ``setup`` (the method of the module docstring); ``progress(n)`` is called
    with every ``n`` evaluations spent."""
    total = math.floor(budget * setup.steps + 1e-9)
    if total < MIN_EVALUATIONS:
        raise ValueError(
            f"budget × steps = {budget:g} × {setup.steps} = {total} gradient evaluations; the "
            f"advisor needs at least {MIN_EVALUATIONS}: raise budget or steps"
        )
    meter = Budget(total, progress)
    task0 = setup.build(seed)
    portfolio, skipped = build_portfolio(
        full_batch=setup.full_batch, num_params=setup.num_params,
        model=getattr(task0, "model", None), only=candidates)
    if not portfolio:
        raise ValueError(f"no candidate applies here: {skipped}")
    noise = curvature = None
    if total >= 60:
        noise = gradient_noise(setup, min(8, max(3, total // 25)), seed, meter)
        if noise.ratio > 1e-6 and any(c.name == "lbfgs" for c in portfolio):
            portfolio = [c for c in portfolio if c.name != "lbfgs"]
            skipped["lbfgs"] = (f"the gradients are noisy (ρ = {noise.ratio:.3g}); L-BFGS needs "
                                "the same function every step")
    if tail_averaging(setup, noise, seed):
        portfolio = [c.averaged() for c in portfolio]  # step 6: decided before training
    tested = [c for c in portfolio if c.lr_range is not None]
    fixed = [c for c in portfolio if c.lr_range is None]

    def drop_untestable(left: int) -> None:
        while len(tested) > 1 and range_steps(left, len(tested), False) < RANGE_STEPS[0]:
            skipped[tested.pop().name] = (f"budget too small for a range test of at least "
                                          f"{RANGE_STEPS[0]} steps beside the others")

    # λ_max only caps momentum SGD's rate: measured only when momentum is still tested
    # with its cost set aside.
    drop_untestable(meter.left - (CURVATURE_COST if noise is not None else 0))
    if noise is not None and any(c.name == "momentum" for c in tested):
        curvature = sharpness(setup, seed, meter, iterations=CURVATURE_ITERATIONS)
    drop_untestable(meter.left)
    alone = len(tested) == 1 and not fixed
    check_alone = alone and meter.left >= RANGE_STEPS[0] + 2 * CHECK_MIN
    r = range_steps(meter.left, len(tested), alone) if tested else 0
    if check_alone:
        r = RANGE_STEPS[0]  # the rest: one run at the suggested rate and its check (step 5)
    tests = [range_test(setup, c, max(3, r), seed, meter) for c in tested]
    lrs: dict[str, float] = {t.candidate: t.lr for t in tests}
    momentum = next((c for c in portfolio if c.name == "momentum"), None)
    if curvature and momentum is not None and momentum.name in lrs:
        bound = 2 * (1 + momentum.defaults["momentum"]) / curvature
        lrs["momentum"] = min(lrs["momentum"], bound / 2)
    entries = [c for c in portfolio if c in tested or c in fixed]  # priority order
    lrs.update({c.name: float(c.lr) for c in fixed})
    s, survivors = halving_plan(len(entries), meter.left // 2 if check_alone else meter.left)
    while s < 3 and len(entries) > 1:
        skipped[entries.pop().name] = "budget too small for its short run"
        s, survivors = halving_plan(len(entries), meter.left)
    if alone and meter.left < ALONE_RUN_MIN:
        survivors = []  # the range test had the budget; no short run to learn from
    rungs: list[list[RunResult]] = []
    alive = list(entries)
    for i, keep in enumerate(survivors):
        alive = alive[:keep]
        rung = [short_run(setup, c, lrs[c.name], s * 2**i, seed, meter) for c in alive]
        rungs.append(rung)
        order = sorted(range(len(rung)), key=lambda j: _rank_key(rung[j], setup, j))
        alive = [alive[j] for j in order]
    last = sorted(rungs[-1], key=lambda run: _rank_key(run, setup, 0)) if rungs else []
    winner_run = last[0] if last else None
    winner = entries[0] if winner_run is None else next(
        c for c in entries if c.name == winner_run.candidate)
    checks: list[RunResult] = []
    if winner.lr_range is not None and winner_run is not None:
        length = s * 2 ** (len(rungs) - 1)  # the planned length of the winner's last run
        if length >= CHECK_MIN and meter.left >= length:
            check = short_run(setup, winner, lrs[winner.name] * CHECK_FACTOR, length, seed,
                              meter, phase="learning-rate check")
            checks.append(check)
            if _rank_key(check, setup, 0) < _rank_key(winner_run, setup, 0):
                lrs[winner.name], winner_run = check.lr, check
    return _recommend(setup, winner, lrs[winner.name], winner_run, last, rungs, tests, noise,
                      curvature, skipped, meter, len(entries), checks)


def tail_averaging(setup: AdviseSetup, noise: Any, seed: int) -> bool:
    """Whether the advice averages the iterates instead of decaying the rate (step 6):
    stochastic gradients (mini-batches, or a noise probe that found ρ > 0) of a loss
    quadratic in the parameters."""
    stochastic = not setup.full_batch or (noise is not None and noise.ratio > 1e-6)
    return stochastic and bool(is_quadratic(setup, seed))


def _rank_key(run: RunResult, setup: AdviseSetup, index: int) -> tuple[float, int]:
    value = run.final if not run.diverged and math.isfinite(run.final) else setup.worst()
    return (-value if setup.higher_is_better else value, index)


def _recommend(setup: AdviseSetup, winner: Candidate, lr: float, run: RunResult | None,
               last: list[RunResult], rungs: list[list[RunResult]], tests: list[Any], noise: Any,
               curvature: float | None, skipped: dict[str, str], meter: Budget,
               tried: int, checks: list[RunResult]) -> Recommendation:
    reasons: list[str] = []
    metric_is_loss = setup.metric.endswith("loss")
    findings = [] if run is None else _findings(run, metric_is_loss)
    kinds = {f.kind for f in findings}
    lead = (f"; runner-up {last[1].candidate} {last[1].final:.4g}" if len(last) > 1 else "")
    if run is None:
        reasons.append(
            f"optimizer: {winner.name}, the first candidate of the portfolio; "
            f"{meter.total} evaluations allowed one range test and no short run to compare")
    else:
        reasons.append(
            f"optimizer: {winner.name} had the best {setup.metric} ({last[0].final:.4g}) "
            f"after {last[0].evaluations} evaluations in the last successive-halving "
            f"rung{lead}")
    test = next((t for t in tests if t.candidate == winner.name), None)
    if test is not None:
        suggested = test.lr
        pinned = (test.diverged_at is None
                  and min(range(len(test.smoothed)), key=test.smoothed.__getitem__)
                  == len(test.smoothed) - 1)
        reasons.append(f"learning rate: {suggested:.3g} from its range test over "
                       f"{len(test.lrs)} steps ({test.lrs[0]:.2g}…{test.lrs[-1]:.2g})"
                       + ("; the loss still fell at the sweep's end, so the range bounds "
                          "this rate" if pinned else ""))
        for check in checks:  # last[0]: the winner's run at the suggested rate
            reasons.append(
                f"learning rate checked at {check.lr:.3g} (a third) in a run of "
                f"{check.evaluations} evaluations: {setup.metric} {check.final:.4g} against "
                f"{last[0].final:.4g} at {suggested:.3g}; "
                + (f"lowered to {lr:.3g}" if lr < suggested else f"kept {suggested:.3g}"))
    else:
        reasons.append(f"learning rate: {lr:g}, its default (a line search sets the step)")
    if FindingKind.OSCILLATION in kinds:
        lr /= 2
        reasons.append(f"learning rate halved to {lr:.3g}: the loss oscillated in its short run")
    warm, why = 0.0, ""
    if winner.schedule != "none":
        warm, why = 0.02, "AlgoPerf's default"
        if noise is not None and noise.ratio > 1:
            warm, why = 0.05, (f"gradient noise-to-signal ratio ρ = {noise.ratio:.3g} > 1: "
                               "early steps are noisy")
        if test is not None and test.diverged_at is not None and lr > test.diverged_at / 3:
            warm, why = 0.10, (f"lr {lr:.3g} is within 3× of where its range test diverged "
                               f"({test.diverged_at:.3g}): near the edge of stability")
        if winner.name == "momentum" and curvature and lr * curvature > 0.5 * (
                1 + winner.defaults["momentum"]):
            warm, why = 0.10, (f"lr·λ_max = {lr * curvature:.3g}, above a quarter of the "
                               "heavy-ball stability bound 2(1+μ)")
        reasons.append(f"warm-up: {warm:.0%} of the steps ({why})")
    if winner.schedule == "warmup_cosine":
        noisy = "" if noise is None else f"; gradient noise ρ = {noise.ratio:.3g}"
        reasons.append("schedule: cosine decay to 0 after the warm-up (AlgoPerf's recipe; decay "
                       f"removes the noise floor{noisy})")
    elif winner.schedule == "warmup":
        reasons.append("schedule: constant after the warm-up (Schedule-Free averages instead)")
    elif winner.schedule == "warmup_average":
        reasons.append(
            f"schedule: constant after the warm-up, the iterates averaged uniformly from step "
            f"{average_from(setup.steps) + 1} to the end (tail averaging) instead of a decay: "
            "stochastic gradients of a loss quadratic in the parameters (measured along a "
            "random line), where averaging at a constant step is the optimal method and "
            "tolerates a step off by a constant factor")
    else:
        reasons.append("schedule: none (L-BFGS's line search picks each step)")
    clip = None
    norms = [] if run is None else [g for g in run.grad_norms if math.isfinite(g)]
    if winner.lr_range is None:
        reasons.append("clipping: none (a line search sets the step; clipped gradients would "
                       "break its Wolfe conditions)")
    elif run is None:
        reasons.append("clipping: none (not measured: no short run)")
    elif norms:
        median = sorted(norms)[len(norms) // 2]
        spike = max(norms) / max(median, 1e-30)
        if spike > 10 or kinds & {FindingKind.EXPLODING_GRADIENTS, FindingKind.DIVERGENCE}:
            clip = 2 * median
            reasons.append(f"clipping: total gradient norm to {clip:.3g} (2× the median; the norm "
                           f"jumped to {spike:.3g}× its median in the short run)")
        else:
            reasons.append(f"clipping: none (largest gradient norm {spike:.3g}× the median)")
    if curvature is not None:
        reasons.append(f"curvature: λ_max ≈ {curvature:.3g} at the start (power iteration); "
                       f"lr·λ_max = {lr * curvature:.3g}")
    if FindingKind.PLATEAU in kinds:
        reasons.append("plateau: the short run's metric stopped improving; more steps at this "
                       "setting may not help much")
    warnings = sum(1 for f in findings if f.severity != Severity.INFO)
    gap = _gap(last[0].final, last[1].final, setup) if len(last) > 1 else 0.3
    confidence = min(1.0, gap / 0.1) * 0.75**warnings
    if tried == 1:
        confidence = min(confidence, 0.3 if run is not None else 0.2)
    schedule = None
    if winner.schedule != "none":
        schedule = {"kind": winner.schedule, "peak_lr": lr,
                    "warmup_steps": min(max(1, math.ceil(warm * setup.steps)), setup.steps - 1),
                    "total_steps": setup.steps}
        if winner.schedule == "warmup_average":
            schedule["average_from"] = average_from(setup.steps)
    hyper = {"lr": lr, **winner.defaults}
    evidence = Evidence(meter.total, dict(meter.by_phase), skipped, noise, tests,
                        rungs, findings, curvature, checks)
    return Recommendation(winner.optimizer, winner.name, hyper, schedule, clip, setup.steps,
                          setup.metric, setup.higher_is_better, reasons, round(confidence, 3),
                          evidence, math.nan if run is None else run.final, problem=setup.name)

