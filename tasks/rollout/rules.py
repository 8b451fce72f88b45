"""The online verdict: does the challenger hold up against the champion on live traffic?

Pure logic, no SDK. It takes per-arm summaries of the request log (:class:`ArmSample`) and the
rollout's progress, and returns a frozen :class:`RolloutVerdict` listing every guardrail check
with what was observed and what was required, like the offline gate (``tasks/evaluation/rules``).
Guardrails speak MLflow's ``MetricThreshold`` vocabulary:

* ``threshold``: an absolute bar for the challenger (e.g. error rate <= 0.05);
* ``min_absolute_change`` / ``min_relative_change``: the change required of the challenger over the
  champion *in the metric's better direction*, on the same window. Online, a negative value is a
  tolerated loss: ``min_relative_change: -0.2`` on p95 latency lets the challenger be up to 20%
  slower; ``0`` (the default) means "not worse";
* ``greater_is_better``: fixed by the metric (a mismatch is a configuration error).

**Breach, not noise.** A check is *breached* only when its always-valid interval
(:mod:`tuneops.tasks.rollout.stats`) lies entirely on the wrong side of what is required, so the
verdict stays valid when taken after every analysis interval. The error budget ``alpha`` is split
evenly over the checks (Bonferroni) so the false-rollback rate of the whole rollout stays below it.

**Thin data decides nothing.** A check whose arms have fewer than ``min_samples`` observations is
*waiting*; the verdict waits too, until ``max_duration`` has passed, and then aborts with
"insufficient traffic" (never a silent pass). A breach on enough data always wins: a rollback.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tuneops.tasks.rollout.stats import (
    Moments,
    SequentialInterval,
    mean_difference_interval,
    mean_interval,
    proportion_difference_interval,
    proportion_interval,
    proportion_sample_size,
    quantile,
    quantile_interval,
    relative_difference_interval,
)

Metric = Literal[
    "error_rate",
    "latency_p95_ms",
    "format_compliance",
    "refusal_rate",
    "feedback_score",
    "cost_per_1k_requests_usd",
]
METRICS: tuple[Metric, ...] = (
    "error_rate", "latency_p95_ms", "format_compliance", "refusal_rate", "feedback_score",
    "cost_per_1k_requests_usd",
)  # fmt: skip
GREATER_IS_BETTER: Mapping[Metric, bool] = {
    "error_rate": False,
    "latency_p95_ms": False,
    "format_compliance": True,
    "refusal_rate": False,
    "feedback_score": True,
    "cost_per_1k_requests_usd": False,
}
# The effect size each metric's interval is tightest for (units of the metric; relative for the
# relative checks): five points of a rate or a feedback score, ten percent of a cost.
DEFAULT_TAU: Mapping[Metric, float] = {
    "error_rate": 0.05,
    "latency_p95_ms": 0.1,
    "format_compliance": 0.05,
    "refusal_rate": 0.05,
    "feedback_score": 0.05,
    "cost_per_1k_requests_usd": 0.1,
}
_PROPORTIONS: frozenset[Metric] = frozenset({"error_rate", "format_compliance", "refusal_rate"})

Action = Literal["proceed", "wait", "rollback", "abort"]
CheckKind = Literal["threshold", "min_absolute_change", "min_relative_change"]
CheckStatus = Literal["breached", "holding", "waiting"]
INSUFFICIENT_TRAFFIC = "insufficient traffic"


class GuardrailLike(Protocol):
    """What a guardrail needs; ``tuneops.spec.GuardrailConfig`` fits."""

    @property
    def metric(self) -> Metric: ...
    @property
    def threshold(self) -> float | None: ...
    @property
    def min_absolute_change(self) -> float | None: ...
    @property
    def min_relative_change(self) -> float | None: ...


@dataclass(frozen=True)
class Guardrail:
    """A guardrail as a plain value (for callers without a spec)."""

    metric: Metric
    threshold: float | None = None
    min_absolute_change: float | None = None
    min_relative_change: float | None = None


DEFAULT_GUARDRAILS: tuple[Guardrail, ...] = (
    Guardrail("error_rate", min_absolute_change=0.0),
    Guardrail("latency_p95_ms", min_relative_change=-0.2),
    Guardrail("format_compliance", min_absolute_change=0.0),
    Guardrail("refusal_rate", min_absolute_change=0.0),
)


@dataclass(frozen=True)
class ArmSample:
    """One arm's traffic in the analysis window, summarised from the request log.

    ``requests`` counts attempts of this version (errors included); format and refusal count only
    answers that were checked; ``latencies_ms`` is ascending; ``cost_usd`` is per request.
    """

    label: str
    version: str | None = None
    requests: int = 0
    errors: int = 0
    format_checked: int = 0
    format_ok: int = 0
    refusal_checked: int = 0
    refusals: int = 0
    latencies_ms: tuple[float, ...] = ()
    feedback: Moments = field(default_factory=Moments)
    cost_usd: Moments = field(default_factory=Moments)

    def samples(self, metric: Metric) -> int:
        """How many observations ``metric`` rests on in this arm."""
        counts: dict[Metric, int] = {
            "error_rate": self.requests,
            "latency_p95_ms": len(self.latencies_ms),
            "format_compliance": self.format_checked,
            "refusal_rate": self.refusal_checked,
            "feedback_score": int(self.feedback.n),
            "cost_per_1k_requests_usd": int(self.cost_usd.n),
        }
        return counts[metric]

    def value(self, metric: Metric) -> float | None:
        """The metric's point estimate, None without data."""
        if self.samples(metric) == 0:
            return None
        if metric == "error_rate":
            return self.errors / self.requests
        if metric == "format_compliance":
            return self.format_ok / self.format_checked
        if metric == "refusal_rate":
            return self.refusals / self.refusal_checked
        if metric == "latency_p95_ms":
            return float(quantile(self.latencies_ms, 0.95))
        mean = self.feedback.mean if metric == "feedback_score" else self.cost_usd.mean
        scale = 1.0 if metric == "feedback_score" else 1000.0
        return None if mean is None else float(mean) * scale


@dataclass(frozen=True)
class StepProgress:
    """Where the rollout stands: time since it began and since this step began, step traffic.

    ``required_requests`` is what each arm must have seen in this step before it may proceed
    (``min_requests_per_step``, or the A/B sample size); ``min_step_seconds`` the minimum hold.
    """

    elapsed_seconds: float
    step_elapsed_seconds: float
    challenger_step_requests: int
    champion_step_requests: int
    required_requests: int
    min_step_seconds: float = 0.0


@dataclass(frozen=True)
class RolloutPolicy:
    """How strictly to judge: error budget, minimum sample per arm, overall time limit."""

    guardrails: tuple[GuardrailLike, ...] = DEFAULT_GUARDRAILS
    alpha: float = 0.05
    min_samples: int = 100
    max_duration_seconds: float = 86_400.0
    tau: Mapping[Metric, float] = field(default_factory=lambda: dict(DEFAULT_TAU))

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha is in (0, 1), not {self.alpha}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be at least 1, not {self.min_samples}")

    def check_count(self) -> int:
        return sum(len(_requirements(g)) for g in self.guardrails)


@dataclass(frozen=True)
class GuardrailCheck:
    """One check: the challenger vs a requirement, observed vs required, with its interval.

    ``interval`` bounds the challenger's value (``threshold``), its gain over the champion in the
    metric's better direction (``min_absolute_change``) or its relative gain (``min_relative_change``).
    """

    metric: Metric
    kind: CheckKind
    status: CheckStatus
    message: str
    challenger: float | None
    champion: float | None
    observed: float | None
    required: float
    interval: SequentialInterval | None
    challenger_samples: int
    champion_samples: int

    @property
    def breached(self) -> bool:
        return self.status == "breached"

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "kind": self.kind,
            "status": self.status,
            "message": self.message,
            "challenger": self.challenger,
            "champion": self.champion,
            "observed": self.observed,
            "required": self.required,
            "interval": None if self.interval is None else self.interval.to_dict(),
            "challenger_samples": self.challenger_samples,
            "champion_samples": self.champion_samples,
        }


@dataclass(frozen=True)
class RolloutVerdict:
    """What to do now and why. A rollback is this result, not an exception."""

    action: Action
    checks: tuple[GuardrailCheck, ...]
    reasons: tuple[str, ...]
    challenger_requests: int
    champion_requests: int

    @property
    def breaches(self) -> tuple[GuardrailCheck, ...]:
        return tuple(c for c in self.checks if c.breached)

    def summary(self) -> str:
        return f"{self.action}: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reasons": list(self.reasons),
            "checks": [c.to_dict() for c in self.checks],
            "challenger_requests": self.challenger_requests,
            "champion_requests": self.champion_requests,
        }


def _fmt(value: float | None) -> str:
    return "missing" if value is None or math.isnan(value) else f"{value:.4g}"


def _requirements(g: GuardrailLike) -> list[tuple[CheckKind, float]]:
    reqs: list[tuple[CheckKind, float]] = []
    if g.threshold is not None:
        reqs.append(("threshold", g.threshold))
    if g.min_absolute_change is not None:
        reqs.append(("min_absolute_change", g.min_absolute_change))
    if g.min_relative_change is not None:
        reqs.append(("min_relative_change", g.min_relative_change))
    if g.min_absolute_change is None and g.min_relative_change is None:
        reqs.append(("min_absolute_change", 0.0))  # always compared with the champion: not worse
    return reqs


def _value_interval(arm: ArmSample, metric: Metric, alpha: float, tau: float) -> SequentialInterval:
    """Always-valid interval for one arm's value of ``metric`` (two-sided, level ``alpha``)."""
    if metric == "error_rate":
        return proportion_interval(arm.errors, arm.requests, alpha=alpha, tau=tau)
    if metric == "format_compliance":
        return proportion_interval(arm.format_ok, arm.format_checked, alpha=alpha, tau=tau)
    if metric == "refusal_rate":
        return proportion_interval(arm.refusals, arm.refusal_checked, alpha=alpha, tau=tau)
    if metric == "latency_p95_ms":
        return quantile_interval(arm.latencies_ms, 0.95, alpha=alpha)
    if metric == "feedback_score":
        return mean_interval(arm.feedback, alpha=alpha, tau=tau)
    # Cost has no natural unit: its tau is relative, scaled by the observed mean cost.
    iv = mean_interval(arm.cost_usd, alpha=alpha, tau=tau * max(arm.cost_usd.mean or 0.0, 1e-12))
    return SequentialInterval(iv.estimate * 1000, iv.low * 1000, iv.high * 1000, iv.confidence)


def _counts(arm: ArmSample, metric: Metric) -> tuple[int, int]:
    if metric == "error_rate":
        return arm.errors, arm.requests
    if metric == "format_compliance":
        return arm.format_ok, arm.format_checked
    return arm.refusals, arm.refusal_checked


def _difference(
    ch: ArmSample, cp: ArmSample, metric: Metric, alpha: float, tau: float, relative: bool
) -> SequentialInterval:
    """Always-valid interval for challenger - champion (or challenger / champion - 1)."""
    if metric in _PROPORTIONS and not relative:
        (x1, n1), (x0, n0) = _counts(ch, metric), _counts(cp, metric)
        return proportion_difference_interval(x1, n1, x0, n0, alpha=alpha, tau=tau)
    if metric == "latency_p95_ms":
        # Two per-arm sequences, each at half the budget, combined by the union bound.
        a = quantile_interval(ch.latencies_ms, 0.95, alpha=alpha / 2)
        b = quantile_interval(cp.latencies_ms, 0.95, alpha=alpha / 2)
        if relative:
            if b.estimate <= 0 or b.low <= 0:
                return SequentialInterval(a.estimate / b.estimate - 1 if b.estimate > 0 else math.nan,
                                          -math.inf, math.inf, 1 - alpha)  # fmt: skip
            ratio = a.estimate / b.estimate - 1
            return SequentialInterval(ratio, a.low / b.high - 1, a.high / b.low - 1, 1 - alpha)
        return SequentialInterval(a.estimate - b.estimate, a.low - b.high, a.high - b.low, 1 - alpha)
    if metric in _PROPORTIONS:  # relative change of a rate: through its counts as moments
        (x1, n1), (x0, n0) = _counts(ch, metric), _counts(cp, metric)
        m1, m0 = Moments(n1, float(x1), float(x1)), Moments(n0, float(x0), float(x0))
        return relative_difference_interval(m1, m0, alpha=alpha, tau=tau)
    m1, m0 = (ch.feedback, cp.feedback) if metric == "feedback_score" else (ch.cost_usd, cp.cost_usd)
    if relative:
        return relative_difference_interval(m1, m0, alpha=alpha, tau=tau)
    scale_tau = tau if metric == "feedback_score" else tau * max(m0.mean or 0.0, 1e-12)
    iv = mean_difference_interval(m1, m0, alpha=alpha, tau=scale_tau)
    scale = 1.0 if metric == "feedback_score" else 1000.0
    return SequentialInterval(iv.estimate * scale, iv.low * scale, iv.high * scale, iv.confidence)


def _gain(iv: SequentialInterval, greater_is_better: bool) -> SequentialInterval:
    """The interval turned so that positive always means "the challenger is better"."""
    if greater_is_better:
        return iv
    return SequentialInterval(-iv.estimate, -iv.high, -iv.low, iv.confidence)


def _check(
    g: GuardrailLike, kind: CheckKind, required: float, ch: ArmSample, cp: ArmSample, policy: RolloutPolicy,
    alpha: float,
) -> GuardrailCheck:  # fmt: skip
    metric = g.metric
    better = GREATER_IS_BETTER[metric]
    tau = policy.tau.get(metric, DEFAULT_TAU[metric])
    n1, n0 = ch.samples(metric), cp.samples(metric)
    v1, v0 = ch.value(metric), cp.value(metric)
    needs_champion = kind != "threshold"
    thin = n1 < policy.min_samples or (needs_champion and n0 < policy.min_samples)
    base = (metric, kind)
    # One-sided at `alpha`: one side of a two-sided sequence at 2 * alpha.
    two_sided = min(2 * alpha, 0.999)
    if kind == "threshold":
        value_iv = _value_interval(ch, metric, two_sided, tau)
        iv = value_iv
        observed = v1
        worst = value_iv.low if better else value_iv.high  # the most favourable end for the challenger
        breach = (worst < required) if better else (worst > required)
        op = ">=" if better else "<="
        what = (f"{metric} {_fmt(v1)} (interval [{_fmt(iv.low)}, {_fmt(iv.high)}]) "
                f"vs threshold {op} {_fmt(required)}")  # fmt: skip
    else:
        relative = kind == "min_relative_change"
        iv = _gain(_difference(ch, cp, metric, two_sided, tau, relative), better)
        observed = iv.estimate
        breach = iv.high < required
        unit = "relative" if relative else "absolute"
        what = (f"{metric} challenger {_fmt(v1)} vs champion {_fmt(v0)}: {unit} gain {_fmt(iv.estimate)} "
                f"(interval [{_fmt(iv.low)}, {_fmt(iv.high)}]), required >= {_fmt(required)}")  # fmt: skip
    if thin:
        need = f"{n1} challenger" + (f" / {n0} champion" if needs_champion else "")
        message = f"{metric}: waiting for data ({need} observations, minimum {policy.min_samples} each)"
        return GuardrailCheck(*base, "waiting", message, v1, v0, observed, required, iv, n1, n0)
    status: CheckStatus = "breached" if breach else "holding"
    message = f"{what}: {'breached' if breach else 'holding'}"
    return GuardrailCheck(*base, status, message, v1, v0, observed, required, iv, n1, n0)


def evaluate_guardrails(
    challenger: ArmSample, champion: ArmSample, policy: RolloutPolicy
) -> tuple[GuardrailCheck, ...]:
    """Every guardrail check, challenger vs champion, each at its share of ``policy.alpha``."""
    count = policy.check_count()
    if count == 0:
        return ()
    alpha = policy.alpha / count
    return tuple(
        _check(g, kind, required, challenger, champion, policy, alpha)
        for g in policy.guardrails
        for kind, required in _requirements(g)
    )


def judge(
    challenger: ArmSample, champion: ArmSample, policy: RolloutPolicy, progress: StepProgress
) -> RolloutVerdict:
    """The verdict for this look: rollback on a breach, proceed when the step's hold is met.

    * any breached check → ``rollback`` (even past ``max_duration``);
    * a check still waiting for data, or the step's hold not met (requests per arm, minimum
      duration) → ``wait``, or ``abort`` with "insufficient traffic" once ``max_duration`` passed;
    * otherwise → ``proceed``.
    """
    checks = evaluate_guardrails(challenger, champion, policy)
    counts = (challenger.requests, champion.requests)
    breaches = [c for c in checks if c.breached]
    if breaches:
        return RolloutVerdict("rollback", checks, tuple(c.message for c in breaches), *counts)
    missing: list[str] = [c.message for c in checks if c.status == "waiting"]
    need = progress.required_requests
    if progress.challenger_step_requests < need or progress.champion_step_requests < need:
        ch_n, cp_n = progress.challenger_step_requests, progress.champion_step_requests
        missing.append(f"step traffic {ch_n} challenger / {cp_n} champion requests, {need} each required")
    if progress.step_elapsed_seconds < progress.min_step_seconds:
        missing.append(f"step held {progress.step_elapsed_seconds:.0f}s of {progress.min_step_seconds:.0f}s")
    if missing:
        if progress.elapsed_seconds >= policy.max_duration_seconds:
            elapsed, limit = progress.elapsed_seconds, policy.max_duration_seconds
            reason = f"{INSUFFICIENT_TRAFFIC} after {elapsed:.0f}s (max {limit:.0f}s)"
            return RolloutVerdict("abort", checks, (reason, *missing), *counts)
        return RolloutVerdict("wait", checks, tuple(missing), *counts)
    return RolloutVerdict("proceed", checks, tuple(c.message for c in checks) or ("no guardrails",), *counts)


# --- the strategies' step plans ---------------------------------------------------------------

Strategy = Literal["shadow", "blue-green", "canary", "ab"]
StepKind = Literal["shadow", "smoke", "weight", "switch", "bake", "promote"]
FULL_WEIGHT = 10_000  # basis points (tuneops.routing_state.FULL_WEIGHT)


@dataclass(frozen=True)
class Step:
    """One step of a rollout plan.

    ``weight`` is the challenger's share (basis points) while the step runs; ``judged`` steps are
    held until the verdict proceeds; ``baseline`` says which traffic the challenger is compared
    with (the champion's answers in the same window, or the old champion's before a switch).
    """

    name: str
    kind: StepKind
    weight: int
    judged: bool
    min_requests: int = 0
    min_seconds: float = 0.0
    baseline: Literal["same-window", "before-switch"] = "same-window"


def _pct(weight: int) -> str:
    return f"{weight / 100:g}%"


def plan_rollout(
    strategy: Strategy,
    *,
    steps_percent: Sequence[float] = (5, 25, 50, 100),
    min_requests_per_step: int = 200,
    min_step_seconds: float = 0.0,
    bake_seconds: float = 0.0,
    shadow_percent: float = 100.0,
    ab_percent: float = 50.0,
    ab_requests: int = 0,
) -> tuple[Step, ...]:
    """The steps of a rollout, last one always ``promote`` (champion <- challenger).

    * shadow: a judged copy of traffic (answers never returned), then promote;
    * blue-green: smoke replay pinned to the challenger at 0%, switch (the promotion), judged bake
      against the old champion's traffic before the switch;
    * canary: a judged step per weight below 100%, then promote;
    * ab: one judged fixed split held for ``ab_requests`` per arm, then promote.
    """

    def bp(percent: float) -> int:
        if not 0 <= percent <= 100:
            raise ValueError(f"a challenger weight is 0-100%, not {percent}")
        return round(percent * FULL_WEIGHT / 100)

    promote = Step("promote", "promote", FULL_WEIGHT, judged=False)
    if strategy == "shadow":
        weight = bp(shadow_percent)
        shadow = Step(
            f"shadow {_pct(weight)}", "shadow", weight, True, min_requests_per_step, min_step_seconds
        )
        return (shadow, promote)
    if strategy == "blue-green":
        return (
            Step("smoke", "smoke", 0, judged=False),
            Step("switch", "switch", FULL_WEIGHT, judged=False),
            Step("bake", "bake", FULL_WEIGHT, True, min_requests_per_step, bake_seconds, "before-switch"),
        )
    if strategy == "ab":
        weight = bp(ab_percent)
        if not 0 < weight < FULL_WEIGHT:
            raise ValueError(f"an A/B split gives each arm some traffic, not {ab_percent}% to the challenger")
        need = max(ab_requests, min_requests_per_step)
        return (Step(f"ab {_pct(weight)}", "weight", weight, True, need, min_step_seconds), promote)
    if strategy != "canary":
        raise ValueError(f"unknown strategy {strategy!r}")
    weights = [bp(p) for p in steps_percent]
    if not weights or any(b <= a for a, b in itertools.pairwise(weights)) or weights[0] <= 0:
        raise ValueError(f"canary steps must be positive and increasing, not {list(steps_percent)}")
    held = tuple(
        Step(_pct(w), "weight", w, True, min_requests_per_step, min_step_seconds)
        for w in weights
        if w < FULL_WEIGHT
    )
    return (*held, promote)


Transition = Literal["stay", "advance", "promote", "rollback", "abort", "done"]


def next_transition(plan: Sequence[Step], index: int, verdict: RolloutVerdict | None) -> Transition:
    """What the flow does after judging step ``index``: a pure map from the verdict.

    Unjudged steps advance at once (``verdict`` may be None). Leaving the last judged step of a
    plan whose final step is ``promote`` is ``promote``; finishing a blue-green bake is ``done``
    (the switch already promoted).
    """
    if not 0 <= index < len(plan):
        raise IndexError(f"step {index} is outside a plan of {len(plan)} steps")
    step = plan[index]
    if step.judged:
        if verdict is None:
            raise ValueError(f"step {step.name!r} is judged: a verdict is needed")
        if verdict.action == "rollback":
            return "rollback"
        if verdict.action == "abort":
            return "abort"
        if verdict.action == "wait":
            return "stay"
    if index + 1 == len(plan):
        return "done"
    return "promote" if plan[index + 1].kind == "promote" else "advance"


def ab_requests_per_arm(
    *,
    baseline_rate: float,
    minimum_detectable_effect: float,
    power: float,
    policy: RolloutPolicy,
    metric: Metric,
) -> int:
    """Requests per arm for the A/B step: the sequential test at this guardrail's share of alpha."""
    if metric not in _PROPORTIONS:
        raise ValueError(f"an A/B sample size is computed for a rate, not {metric}")
    alpha = policy.alpha / max(1, policy.check_count())
    tau = policy.tau.get(metric, DEFAULT_TAU[metric])
    return int(
        proportion_sample_size(baseline_rate, minimum_detectable_effect, alpha=alpha, power=power, tau=tau)
    )


# --- blue-green smoke replay ------------------------------------------------------------------


@dataclass(frozen=True)
class SmokeCase:
    """One evaluated row replayed through the gateway pinned to the challenger."""

    row: int
    expected: str
    answered: str | None
    error: str | None = None
    served_version: str | None = None

    @property
    def matched(self) -> bool:
        return self.error is None and self.answered is not None and _same(self.answered, self.expected)


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


@dataclass(frozen=True)
class SmokeVerdict:
    """Does the live endpoint answer what was evaluated? ``passed`` False refuses the switch."""

    passed: bool
    compared: int
    matched: int
    required_share: float
    mismatched_rows: tuple[int, ...]
    reasons: tuple[str, ...]

    def summary(self) -> str:
        return ("smoke passed: " if self.passed else "smoke failed: ") + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "compared": self.compared, "matched": self.matched,
            "required_share": self.required_share, "mismatched_rows": list(self.mismatched_rows),
            "reasons": list(self.reasons),
        }  # fmt: skip


def judge_smoke(cases: Sequence[SmokeCase], *, version: str, min_match_share: float = 1.0) -> SmokeVerdict:
    """Compare the pinned replay with the evaluated answers (whitespace-normalised, temperature 0).

    Nothing replayed, an answer served by another version than ``version``, or fewer identical
    answers than ``min_match_share`` of the rows: the deployed model is not the evaluated one.
    """
    if not 0 < min_match_share <= 1:
        raise ValueError(f"min_match_share is in (0, 1], not {min_match_share}")
    if not cases:
        return SmokeVerdict(False, 0, 0, min_match_share, (), ("no evaluated rows to replay",))
    reasons: list[str] = []
    wrong = sorted({c.served_version for c in cases if c.served_version not in (None, version)})
    if wrong:
        reasons.append(f"answered by version(s) {', '.join(wrong)}, not {version}")
    errors = [c for c in cases if c.error is not None]
    if errors:
        reasons.append(f"{len(errors)} replayed request(s) failed (first: {errors[0].error})")
    matched = sum(c.matched for c in cases)
    share = matched / len(cases)
    mismatched = tuple(c.row for c in cases if not c.matched)
    observed = f"{matched}/{len(cases)} answers identical to the evaluated ones"
    required = f"{min_match_share:.0%} required"
    ok = share >= min_match_share and not wrong
    if ok:
        reasons.insert(0, f"{observed} ({required})")
    else:
        rows = ", ".join(str(r) for r in mismatched[:5]) + (" ..." if len(mismatched) > 5 else "")
        reasons.insert(0, f"{observed} ({required}); differing rows: {rows or '-'}")
    return SmokeVerdict(ok, len(cases), matched, min_match_share, mismatched, tuple(reasons))
