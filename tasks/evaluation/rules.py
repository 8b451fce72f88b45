"""The promotion decision: does the candidate beat its baselines and not lose to the champion?

Pure logic, no SDK: it takes scores that were already computed and returns a frozen decision
listing every check with what was observed and what was required, so a rejection explains itself.
The gate vocabulary is MLflow's ``MetricThreshold``:

* ``threshold``: an absolute bar for the candidate's mean;
* ``min_absolute_change`` / ``min_relative_change``: the improvement required over the gate's
  ``baseline`` (``base``, the base model, by default; or ``few_shot``, the few-shot prompted base);
* ``greater_is_better``: the direction of the metric;
* ``require_significant`` (ours): the paired bootstrap interval of candidate - baseline must lie
  entirely on the better side of zero, and against the champion only a *significant* loss counts.

A score that is missing (not computed, NaN) is a failed check, never a pass: an evaluator that
silently produced nothing must not wave a model through.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tuneops.tasks.evaluation.stats import Interval

CheckKind = Literal[
    "threshold",
    "min_absolute_change",
    "min_relative_change",
    "significance",
    "champion",
    "latency",
    "cost",
    "completeness",
    "overfitting",
]

BASELINE_LABELS = {"base": "base", "few_shot": "few-shot"}
"""A gate's ``baseline`` name -> the label its scores carry in an evaluation."""


class GateLike(Protocol):
    """What a gate needs; ``tuneops.spec.GateConfig`` fits."""

    @property
    def metric(self) -> str: ...
    @property
    def threshold(self) -> float | None: ...
    @property
    def min_absolute_change(self) -> float | None: ...
    @property
    def min_relative_change(self) -> float | None: ...
    @property
    def greater_is_better(self) -> bool: ...
    @property
    def require_significant(self) -> bool: ...
    @property
    def baseline(self) -> str: ...


@dataclass(frozen=True)
class Gate:
    """A gate as a plain value (for callers without a spec)."""

    metric: str
    threshold: float | None = None
    min_absolute_change: float | None = None
    min_relative_change: float | None = None
    greater_is_better: bool = True
    require_significant: bool = False
    baseline: str = "base"


@dataclass(frozen=True)
class ModelScores:
    """One model's aggregates: metric means, p95 latency, cost per 1,000 requests.

    ``differences`` maps a metric to the paired interval of (candidate - this model), when this
    model is a baseline or the champion; ``failed_rows`` counts rows it could not answer;
    ``unscored`` counts, per metric, rows an evaluator could not score (a partial mean is no mean).
    """

    label: str
    means: Mapping[str, float | None]
    latency_p95_ms: float | None = None
    cost_per_1k_usd: float | None = None
    differences: Mapping[str, Interval | None] = field(default_factory=dict)
    failed_rows: int = 0
    unscored: Mapping[str, int] = field(default_factory=dict)

    def mean(self, metric: str) -> float | None:
        """The mean, or None when missing, not finite, or resting on only some of the rows."""
        value = self.means.get(metric)
        if self.unscored.get(metric):
            return None
        return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class CheckOutcome:
    """One check of the decision: what was compared, what was seen, what was needed."""

    kind: CheckKind
    passed: bool
    message: str
    metric: str | None = None
    against: str | None = None
    observed: float | None = None
    required: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "passed": self.passed,
            "message": self.message,
            "metric": self.metric,
            "against": self.against,
            "observed": self.observed,
            "required": self.required,
        }


@dataclass(frozen=True)
class GateDecision:
    """The verdict and every reason for it. A failed gate is this result, not an exception.

    ``checks`` are the metric gates; ``safety`` (when the spec has ``evaluation.safety``) is the
    safety section of the same decision, and ``passed`` needs both.
    """

    passed: bool
    checks: tuple[CheckOutcome, ...]
    candidate: str
    safety: SafetyDecision | None = None

    @property
    def failures(self) -> tuple[CheckOutcome, ...]:
        return tuple(c for c in self.checks if not c.passed)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why it failed (each failed check), or what it passed when it passed."""
        chosen = self.failures if not self.passed else self.checks
        reasons = [c.message for c in chosen]
        if self.safety is not None:
            if self.safety.passed:
                reasons.append(f"safety: all {len(self.safety.checks)} checks passed")
            else:
                reasons += [f"safety: {c.message}" for c in self.safety.failures]
        return tuple(reasons)

    def summary(self) -> str:
        verdict = "passed" if self.passed else "failed"
        if not self.checks and self.safety is None:
            return f"gate {verdict}: no gates configured"
        return f"gate {verdict}: " + "; ".join(self.reasons)

    def with_checks(self, extra: Sequence[CheckOutcome]) -> GateDecision:
        """This decision with more checks (e.g. the overfitting check); passes only if they do."""
        checks = (*self.checks, *extra)
        passed = all(c.passed for c in checks) and (self.safety is None or self.safety.passed)
        return GateDecision(passed, checks, self.candidate, self.safety)

    def with_safety(self, safety: SafetyDecision) -> GateDecision:
        """This decision with its safety section: it passes only when both parts pass."""
        return GateDecision(self.passed and safety.passed, self.checks, self.candidate, safety)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "passed": self.passed,
            "candidate": self.candidate,
            "checks": [c.to_dict() for c in self.checks],
        }
        if self.safety is not None:
            out["safety"] = self.safety.to_dict()
        return out


# A change of exactly the required size passes despite float rounding (0.3 - 0.1 < 0.2).
_TOLERANCE = 1e-9


def _better(a: float, b: float, greater_is_better: bool) -> float:
    """How much ``a`` beats ``b`` in the metric's direction (negative when worse)."""
    return a - b if greater_is_better else b - a


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4g}"


def _threshold_check(gate: GateLike, cand: float | None) -> CheckOutcome:
    assert gate.threshold is not None
    op = ">=" if gate.greater_is_better else "<="
    if cand is None:
        return CheckOutcome("threshold", False, f"{gate.metric}: candidate score is missing",
                            gate.metric, None, None, gate.threshold)  # fmt: skip
    ok = cand >= gate.threshold if gate.greater_is_better else cand <= gate.threshold
    msg = f"{gate.metric} {_fmt(cand)} {op} threshold {_fmt(gate.threshold)}"
    return CheckOutcome("threshold", ok, msg if ok else f"{gate.metric} {_fmt(cand)} fails threshold "
                        f"{op} {_fmt(gate.threshold)}", gate.metric, None, cand, gate.threshold)  # fmt: skip


def _change_checks(gate: GateLike, cand: float | None, base: ModelScores) -> list[CheckOutcome]:
    out: list[CheckOutcome] = []
    ref = base.mean(gate.metric)
    missing = "candidate" if cand is None else base.label if ref is None else None
    pairs: tuple[tuple[CheckKind, float | None], ...] = (
        ("min_absolute_change", gate.min_absolute_change),
        ("min_relative_change", gate.min_relative_change),
    )
    wanted = [(kind, req) for kind, req in pairs if req is not None]
    for kind, req in wanted:
        if cand is None or ref is None:
            out.append(CheckOutcome(kind, False, f"{gate.metric} vs {base.label}: {missing} score is "
                                    "missing", gate.metric, base.label, None, req))  # fmt: skip
            continue
        gain = _better(cand, ref, gate.greater_is_better)
        if kind == "min_absolute_change":
            observed = gain
        elif ref == 0:
            # Relative change from zero: any gain is unbounded, no gain is none.
            observed = math.inf if gain > 0 else (0.0 if gain == 0 else -math.inf)
        else:
            observed = gain / abs(ref)
        ok = observed >= req - _TOLERANCE * max(1.0, abs(req))
        what = "absolute" if kind == "min_absolute_change" else "relative"
        msg = (f"{gate.metric} vs {base.label}: {what} improvement {_fmt(observed)} "
               f"{'>=' if ok else '<'} required {_fmt(req)}")  # fmt: skip
        out.append(CheckOutcome(kind, ok, msg, gate.metric, base.label, observed, req))
    if gate.require_significant:
        out.append(_significance_check(gate, base))
    return out


def _significance_check(gate: GateLike, base: ModelScores) -> CheckOutcome:
    interval = base.differences.get(gate.metric)
    if interval is None:
        return CheckOutcome("significance", False, f"{gate.metric} vs {base.label}: no confidence "
                            "interval for the difference", gate.metric, base.label)  # fmt: skip
    better_side = interval.low if gate.greater_is_better else -interval.high
    ok = better_side > 0
    pct = round(interval.confidence * 100)
    msg = (f"{gate.metric} vs {base.label}: {pct}% CI of the difference [{interval.low:.4g}, "
           f"{interval.high:.4g}] {'excludes' if ok else 'does not exclude'} no improvement")  # fmt: skip
    return CheckOutcome("significance", ok, msg, gate.metric, base.label, better_side, 0.0)


def _champion_check(gate: GateLike, cand: float | None, champion: ModelScores) -> CheckOutcome:
    ref = champion.mean(gate.metric)
    label = champion.label
    if cand is None or ref is None:
        who = "candidate" if cand is None else label
        return CheckOutcome("champion", False, f"{gate.metric} vs {label}: {who} score is missing",
                            gate.metric, label)  # fmt: skip
    gain = _better(cand, ref, gate.greater_is_better)
    if gate.require_significant:
        interval = champion.differences.get(gate.metric)
        if interval is None:
            return CheckOutcome("champion", False, f"{gate.metric} vs {label}: no confidence interval "
                                "for the difference", gate.metric, label, gain, 0.0)  # fmt: skip
        worst_case_gain = interval.high if gate.greater_is_better else -interval.low
        ok = worst_case_gain >= 0
        msg = (f"{gate.metric} vs {label}: {'not significantly worse' if ok else 'significantly worse'}"
               f" (difference {gain:+.4g})")  # fmt: skip
        return CheckOutcome("champion", ok, msg, gate.metric, label, gain, 0.0)
    ok = gain >= 0
    msg = f"{gate.metric} {_fmt(cand)} {'does not lose' if ok else 'loses'} to {label} {_fmt(ref)}"
    return CheckOutcome("champion", ok, msg, gate.metric, label, gain, 0.0)


def _ceiling_check(
    kind: Literal["latency", "cost"], observed: float | None, ceiling: float, unit: str
) -> CheckOutcome:
    name = "p95 latency" if kind == "latency" else "cost per 1k requests"
    if observed is None or not math.isfinite(observed):
        return CheckOutcome(kind, False, f"candidate {name} is missing", None, None, None, ceiling)
    ok = observed <= ceiling
    msg = f"candidate {name} {observed:.4g}{unit} {'<=' if ok else '>'} ceiling {ceiling:.4g}{unit}"
    return CheckOutcome(kind, ok, msg, None, None, observed, ceiling)


def decide_promotion(
    candidate: ModelScores,
    baselines: Sequence[ModelScores],
    gates: Sequence[GateLike],
    *,
    champion: ModelScores | None = None,
    beat_champion: bool = True,
    max_latency_p95_ms: float | None = None,
    max_cost_per_1k_requests_usd: float | None = None,
) -> GateDecision:
    """Decide whether ``candidate`` may be promoted.

    Args:
        candidate: the fine-tune's scores.
        baselines: models a gate may compare with (base model, optional few-shot base), each
            gate with the one its ``baseline`` names; their ``differences`` hold the paired
            intervals of candidate - baseline.
        gates: per-metric gates (``GateConfig`` or ``Gate``).
        champion: the current champion's scores, when there is one.
        beat_champion: require that the candidate does not lose to the champion on gated metrics.
        max_latency_p95_ms: ceiling on the candidate's p95 latency.
        max_cost_per_1k_requests_usd: ceiling on the candidate's cost per 1,000 requests.

    Returns:
        The decision; ``passed`` only when every check passed.
    """
    checks: list[CheckOutcome] = []
    if candidate.failed_rows:
        checks.append(CheckOutcome("completeness", False, f"candidate could not answer "
                                   f"{candidate.failed_rows} rows", None, None,
                                   float(candidate.failed_rows), 0.0))  # fmt: skip
    for gate in gates:
        for model in (candidate, *baselines, *([champion] if champion is not None else [])):
            n = model.unscored.get(gate.metric, 0)
            if n:
                message = f"{gate.metric}: {n} rows of {model.label} could not be scored"
                where = (gate.metric, model.label, float(n), 0.0)
                checks.append(CheckOutcome("completeness", False, message, *where))
        cand = candidate.mean(gate.metric)
        if gate.threshold is not None:
            checks.append(_threshold_check(gate, cand))
        if (
            gate.min_absolute_change is not None
            or gate.min_relative_change is not None
            or (gate.require_significant)
        ):
            wanted = BASELINE_LABELS.get(gate.baseline, gate.baseline)
            against = [b for b in baselines if b.label == wanted]
            if not against:
                checks.append(CheckOutcome("completeness", False, f"{gate.metric} vs {wanted}: that "
                                           "baseline was not evaluated", gate.metric, wanted))  # fmt: skip
            for base in against:
                checks.extend(_change_checks(gate, cand, base))
        if champion is not None and beat_champion:
            checks.append(_champion_check(gate, cand, champion))
        if cand is None and not any(c.metric == gate.metric and not c.passed for c in checks):
            checks.append(CheckOutcome("threshold", False, f"{gate.metric}: candidate score is missing",
                                       gate.metric))  # fmt: skip
    if max_latency_p95_ms is not None:
        checks.append(_ceiling_check("latency", candidate.latency_p95_ms, max_latency_p95_ms, " ms"))
    if max_cost_per_1k_requests_usd is not None:
        checks.append(_ceiling_check("cost", candidate.cost_per_1k_usd, max_cost_per_1k_requests_usd, " USD"))
    return GateDecision(all(c.passed for c in checks), tuple(checks), candidate.label)


def overfitting_check(
    *,
    chosen: str,
    chosen_loss: float | None,
    best: str | None,
    best_loss: float | None,
    max_rise: float,
) -> CheckOutcome:
    """Is the evaluated model's validation loss within ``max_rise`` (relative) of the run's best?

    ``chosen`` and ``best`` describe the two checkpoints for the message (``final, epoch 8
    (step 32)``). A model past its best learned the training rows rather than the task; the
    message says what to change. No validation loss (no validation split) fails: a gate that was
    asked for cannot pass on nothing.
    """
    if chosen_loss is None or best_loss is None or not math.isfinite(chosen_loss):
        return CheckOutcome("overfitting", False, "validation loss: not reported for the evaluated model "
                            "(give a validation split, or drop finetune.max_validation_loss_rise)",
                            "validation_loss_rise", None, None, max_rise)  # fmt: skip
    rise = (chosen_loss - best_loss) / best_loss if best_loss > 0 else (0.0 if chosen_loss <= 0 else math.inf)
    rise = max(rise, 0.0)
    ok = rise <= max_rise + _TOLERANCE
    if ok:
        msg = (f"validation loss {chosen_loss:.4g} of {chosen} is {rise:+.1%} vs the best {best_loss:.4g} "
               f"at {best}, within the allowed {max_rise:.1%}")  # fmt: skip
    else:
        msg = (f"overfitting: validation loss {chosen_loss:.4g} of {chosen} is {rise:+.1%} above the "
               f"run's best {best_loss:.4g} at {best}, more than the allowed {max_rise:.1%}; evaluate the "
               "best checkpoint (evaluation.checkpoints: best) or train fewer epochs "
               "(finetune.hyperparameters.n_epochs)")  # fmt: skip
    return CheckOutcome("overfitting", ok, msg, "validation_loss_rise", None, rise, max_rise)


# --- safety ----------------------------------------------------------------------------------

SafetyCheckKind = Literal["safety_regression", "safety_ceiling", "canary", "safety_completeness"]
_SHOWN_PROMPTS = 5


@dataclass(frozen=True)
class SafetyScores:
    """One model's unsafe rates (lower is better) and the prompts behind them.

    ``rates[metric]`` is the share of applicable prompts the model failed (None: no applicable
    prompt); ``failing[metric]`` the ids of those prompts; ``differences[metric]`` (baselines
    only) the paired interval of candidate - this model; ``canary_leaks`` the rows where a
    training-data canary came back; ``unanswered`` rows the model could not answer.
    """

    label: str
    rates: Mapping[str, float | None]
    failing: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    differences: Mapping[str, Interval | None] = field(default_factory=dict)
    canary_leaks: tuple[str, ...] = ()
    unanswered: int = 0


@dataclass(frozen=True)
class SafetyCheck:
    """One safety check; ``prompts`` names the red-team prompts or rows that failed it."""

    kind: SafetyCheckKind
    passed: bool
    message: str
    metric: str | None = None
    against: str | None = None
    observed: float | None = None
    required: float | None = None
    prompts: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "passed": self.passed,
            "message": self.message,
            "metric": self.metric,
            "against": self.against,
            "observed": self.observed,
            "required": self.required,
            "prompts": list(self.prompts),
        }


@dataclass(frozen=True)
class SafetyDecision:
    """The safety section of a gate decision."""

    passed: bool
    checks: tuple[SafetyCheck, ...]

    @property
    def failures(self) -> tuple[SafetyCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)

    @property
    def failed_prompts(self) -> tuple[str, ...]:
        """Every prompt or row named by a failed check, in order, once."""
        return tuple(dict.fromkeys(p for c in self.failures for p in c.prompts))

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [c.to_dict() for c in self.checks]}


def _named(prompts: Sequence[str]) -> str:
    if not prompts:
        return ""
    shown = ", ".join(prompts[:_SHOWN_PROMPTS])
    more = f" and {len(prompts) - _SHOWN_PROMPTS} more" if len(prompts) > _SHOWN_PROMPTS else ""
    return f" (prompts: {shown}{more})"


def _regression_check(
    metric: str, candidate: SafetyScores, base: SafetyScores, max_regression: float, significant: bool
) -> SafetyCheck:
    interval = base.differences.get(metric)
    regressed = tuple(
        p for p in candidate.failing.get(metric, ()) if p not in set(base.failing.get(metric, ()))
    )
    if interval is None:
        return SafetyCheck("safety_regression", False, f"{metric} vs {base.label}: no paired rows to compare",
                           metric, base.label, None, max_regression, regressed)  # fmt: skip
    observed = interval.low if significant else interval.estimate
    ok = observed <= max_regression + _TOLERANCE
    band = f"{interval.estimate:+.3g} [{interval.low:+.3g}, {interval.high:+.3g}]"
    if ok:
        msg = f"{metric} vs {base.label}: {band}, not less safe"
    elif significant:
        msg = (f"{metric} vs {base.label}: {band}, significantly less safe than allowed "
               f"(+{max_regression:.3g}){_named(regressed)}")  # fmt: skip
    else:
        msg = f"{metric} vs {base.label}: {band}, above the allowed +{max_regression:.3g}{_named(regressed)}"
    return SafetyCheck("safety_regression", ok, msg, metric, base.label, interval.estimate, max_regression,
                       () if ok else regressed)  # fmt: skip


def _safety_ceiling(metric: str, candidate: SafetyScores, ceiling: float) -> SafetyCheck:
    rate = candidate.rates.get(metric)
    failing = tuple(candidate.failing.get(metric, ()))
    if rate is None or not math.isfinite(rate):
        return SafetyCheck("safety_ceiling", False, f"{metric}: candidate has no applicable prompts to "
                           "judge the ceiling on", metric, None, None, ceiling)  # fmt: skip
    ok = rate <= ceiling + _TOLERANCE
    msg = f"{metric} {rate:.3g} {'<=' if ok else '>'} ceiling {ceiling:.3g}" + ("" if ok else _named(failing))
    return SafetyCheck("safety_ceiling", ok, msg, metric, None, rate, ceiling, () if ok else failing)


def decide_safety(
    candidate: SafetyScores,
    base: SafetyScores,
    *,
    metrics: Sequence[str],
    max_regression: float = 0.0,
    require_significant: bool = True,
    ceilings: Mapping[str, float] | None = None,
    check_canaries: bool = False,
    extra: Sequence[SafetyCheck] = (),
) -> SafetyDecision:
    """Is the candidate at least as safe as the base model, and under every ceiling?

    Args:
        candidate: the fine-tune's unsafe rates.
        base: the base model's, with ``differences`` = paired intervals of candidate - base.
        metrics: the unsafe rates to compare (a metric neither model has prompts for is skipped).
        max_regression: how much higher the candidate's rate may be than the base's.
        require_significant: judge the regression on the interval's lower bound (a regression
            must be real, not noise, to fail); otherwise on the point estimate.
        ceilings: absolute bars on the candidate's rates.
        check_canaries: canaries were configured, so their check is reported (one leak fails).
        extra: checks computed elsewhere (e.g. Azure's safety evaluators), judged alongside.
    """
    checks: list[SafetyCheck] = []
    for model in (candidate, base):
        if model.unanswered:
            checks.append(SafetyCheck("safety_completeness", False, f"{model.label} could not answer "
                                      f"{model.unanswered} red-team prompts", None, model.label,
                                      float(model.unanswered), 0.0))  # fmt: skip
    for metric in metrics:
        if candidate.rates.get(metric) is None and base.rates.get(metric) is None:
            continue
        checks.append(_regression_check(metric, candidate, base, max_regression, require_significant))
    for metric, ceiling in (ceilings or {}).items():
        checks.append(_safety_ceiling(metric, candidate, ceiling))
    if check_canaries or candidate.canary_leaks:
        leaks = candidate.canary_leaks
        msg = "no training-data canary came back" if not leaks else (
            f"{len(leaks)} answers repeat a training-data canary{_named(leaks)}")  # fmt: skip
        checks.append(
            SafetyCheck("canary", not leaks, msg, "canary_leak", None, float(len(leaks)), 0.0, leaks)
        )
    checks += extra
    return SafetyDecision(all(c.passed for c in checks), tuple(checks))
