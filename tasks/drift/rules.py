"""The drift verdict: has the champion's traffic moved away from what it was trained and judged on?

Pure logic, no SDK: it takes measurements already computed (:mod:`tuneops.tasks.drift.stats`) and
the thresholds of ``monitoring:`` and returns a frozen :class:`DriftVerdict` listing every signal
with what was observed, what it was compared with and the bar, like the promotion gate does. A
window with too little traffic is a verdict of its own (``insufficient_traffic``), never "no
drift": thin data proves nothing either way.

Each signal is built to stay quiet on an unchanged distribution at the stated thresholds:

* embedding drift needs the *lower* bound of the domain classifier's AUC interval above
  ``embedding_auc_threshold`` (AUC ~0.5 when nothing changed);
* prompt-length PSI above ``psi_threshold`` (its sampling noise at a few hundred requests is ~0.05);
* out-of-distribution share above ``ood_share_threshold`` (~1% expected at the 99th percentile);
* a quality rate (format failures, refusals, errors) must rise by more than ``max_rate_increase``
  over the evaluation's rate *and* the rise must be significant at ``significance``;
* p95 latency above ``max_latency_ratio`` times the evaluation's; mean feedback below
  ``min_feedback_mean`` over at least ``min_feedback`` scores; the low-confidence share above
  ``max_low_confidence_share`` where the provider returned log-probabilities;
* a sampled quality score (``quality:<metric>``, the evaluation's own scorers on a sample of
  served answers) must have its whole interval on the wrong side of the gate's ``threshold``
  (below it, or above it for lower-is-better metrics such as ``pii_leak``), so a sample that
  merely dips under the bar by chance stays quiet. Fewer than ``quality_min_rows`` scored rows
  leave the score unjudged, and a "no drift" summary then says quality was not judged.

A signal that could not be measured (no texts captured, no baseline, no logprobs) is listed as
such with the reason, and never counts as drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from tuneops.spec import MonitoringConfig
from tuneops.tasks.drift.stats import AucResult, OodResult, RateTest

Status = Literal["drifted", "no_drift", "insufficient_traffic"]
SIGNALS = (
    "embedding_auc",
    "prompt_length_psi",
    "ood_share",
    "format_failure_rate",
    "refusal_rate",
    "error_rate",
    "latency_p95_ms",
    "feedback_mean",
    "low_confidence_share",
)


QUALITY_PREFIX = "quality:"


@dataclass(frozen=True)
class QualityScore:
    """One scorer's mean over the sampled served answers, with its interval and the bars.

    ``threshold`` is the spec's gate on the metric (None: no gate, reported only);
    ``evaluated`` what the evaluation measured for the served version; ``unjudged`` why the
    scorer could not score the sample at all (e.g. the judge endpoint is down).
    """

    metric: str
    mean: float
    low: float
    high: float
    rows: int
    threshold: float | None = None
    greater_is_better: bool = True
    evaluated: float | None = None
    unjudged: str | None = None


@dataclass(frozen=True)
class Measurements:
    """What one window measured; None where a signal could not be measured (see ``missing``)."""

    requests: int
    embedding: AucResult | None = None
    prompt_length_psi: float | None = None
    ood: OodResult | None = None
    format_failures: RateTest | None = None
    refusals: RateTest | None = None
    errors: RateTest | None = None
    latency_p95_ms: float | None = None
    latency_baseline_ms: float | None = None
    feedback_mean: float | None = None
    feedback_count: int = 0
    low_confidence_share: float | None = None
    quality: tuple[QualityScore, ...] = ()
    missing: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SignalOutcome:
    """One signal: observed value, what it was compared with, the bar, and whether it drifted."""

    name: str
    measured: bool
    drifted: bool
    message: str
    observed: float | None = None
    baseline: float | None = None
    threshold: float | None = None
    effect: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": self.measured,
            "drifted": self.drifted,
            "message": self.message,
            "observed": self.observed,
            "baseline": self.baseline,
            "threshold": self.threshold,
            "effect": self.effect,
        }


@dataclass(frozen=True)
class DriftVerdict:
    """The verdict on one window. A drifted window is this result, not an exception."""

    model: str
    version: str | None
    status: Status
    requests: int
    min_requests: int
    signals: tuple[SignalOutcome, ...]
    window_start: datetime | None = None
    window_end: datetime | None = None

    @property
    def drifted(self) -> bool:
        return self.status == "drifted"

    @property
    def drifted_signals(self) -> tuple[SignalOutcome, ...]:
        return tuple(s for s in self.signals if s.drifted)

    @property
    def reasons(self) -> list[str]:
        return [s.message for s in self.drifted_signals]

    def summary(self) -> str:
        """One line a human (and the retrain run's ``reason``) reads."""
        if self.status == "insufficient_traffic":
            return f"insufficient traffic: {self.requests} requests in the window, {self.min_requests} needed"
        if self.status == "no_drift":
            unjudged = [s for s in self.signals if s.name.startswith(QUALITY_PREFIX) and not s.measured]
            tail = f" ({unjudged[0].message})" if unjudged else ""
            return f"no drift in {self.requests} requests{tail}"
        return "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "status": self.status,
            "drifted": self.drifted,
            "summary": self.summary(),
            "requests": self.requests,
            "min_requests": self.min_requests,
            "window_start": self.window_start.isoformat() if self.window_start else None,
            "window_end": self.window_end.isoformat() if self.window_end else None,
            "signals": [s.to_dict() for s in self.signals],
        }


def decide_drift(
    model: str,
    version: str | None,
    measured: Measurements,
    config: MonitoringConfig,
    *,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
) -> DriftVerdict:
    """Judge one window's measurements against ``config`` (the spec's ``monitoring:``)."""

    def verdict(status: Status, signals: tuple[SignalOutcome, ...]) -> DriftVerdict:
        return DriftVerdict(
            model=model,
            version=version,
            status=status,
            requests=measured.requests,
            min_requests=config.min_requests,
            signals=signals,
            window_start=window_start,
            window_end=window_end,
        )

    if measured.requests < config.min_requests:
        return verdict("insufficient_traffic", ())
    signals = (
        _embedding(measured, config),
        _psi(measured, config),
        _ood(measured, config),
        _rate("format_failure_rate", "format failures", measured.format_failures, config),
        _rate("refusal_rate", "refusals", measured.refusals, config),
        _rate("error_rate", "errors", measured.errors, config),
        _latency(measured, config),
        _feedback(measured, config),
        _low_confidence(measured, config),
        *_quality(measured, config),
    )
    return verdict("drifted" if any(s.drifted for s in signals) else "no_drift", signals)


def _not_measured(name: str, measured: Measurements, default: str) -> SignalOutcome:
    reason = measured.missing.get(name, default)
    return SignalOutcome(name=name, measured=False, drifted=False, message=f"{name} not measured: {reason}")


def _embedding(m: Measurements, config: MonitoringConfig) -> SignalOutcome:
    name, result, bar = "embedding_auc", m.embedding, config.embedding_auc_threshold
    if result is None:
        return _not_measured(name, m, "no prompt texts")
    drifted = result.low > bar
    relation = ">" if drifted else "<="
    return SignalOutcome(
        name=name,
        measured=True,
        drifted=drifted,
        message=(
            f"embedding AUC {result.auc:.3f} [{result.low:.3f}, {result.high:.3f}] "
            f"(lower bound {relation} {bar})"
        ),
        observed=result.auc,
        baseline=0.5,
        threshold=bar,
        effect=result.auc - 0.5,
    )


def _psi(m: Measurements, config: MonitoringConfig) -> SignalOutcome:
    name, value, bar = "prompt_length_psi", m.prompt_length_psi, config.psi_threshold
    if value is None:
        return _not_measured(name, m, "no prompt token counts")
    drifted = value > bar
    return SignalOutcome(
        name=name,
        measured=True,
        drifted=drifted,
        message=f"prompt-length PSI {value:.3f} {'>' if drifted else '<='} {bar}",
        observed=value,
        baseline=0.0,
        threshold=bar,
        effect=value,
    )


def _ood(m: Measurements, config: MonitoringConfig) -> SignalOutcome:
    name, result, bar = "ood_share", m.ood, config.ood_share_threshold
    if result is None:
        return _not_measured(name, m, "no prompt texts")
    drifted = result.share > bar
    return SignalOutcome(
        name=name,
        measured=True,
        drifted=drifted,
        message=(
            f"out-of-distribution share {result.share:.1%} {'>' if drifted else '<='} {bar:.1%} "
            f"(expected {result.expected:.0%})"
        ),
        observed=result.share,
        baseline=result.expected,
        threshold=bar,
        effect=result.share - result.expected,
    )


def _rate(name: str, label: str, test: RateTest | None, config: MonitoringConfig) -> SignalOutcome:
    if test is None:
        return SignalOutcome(
            name=name, measured=False, drifted=False, message=f"{name} not measured: no baseline or no flags"
        )
    bar = test.baseline + config.max_rate_increase
    drifted = test.observed > bar and test.p_value < config.significance
    return SignalOutcome(
        name=name,
        measured=True,
        drifted=drifted,
        message=(
            f"{label} {test.observed:.1%} vs {test.baseline:.1%} at evaluation "
            f"({'above' if drifted else 'within'} +{config.max_rate_increase:.0%}, p={test.p_value:.2g})"
        ),
        observed=test.observed,
        baseline=test.baseline,
        threshold=bar,
        effect=test.increase,
    )


def _latency(m: Measurements, config: MonitoringConfig) -> SignalOutcome:
    name = "latency_p95_ms"
    if m.latency_p95_ms is None or not m.latency_baseline_ms:
        return _not_measured(name, m, "no evaluated p95 latency to compare with")
    ratio = m.latency_p95_ms / m.latency_baseline_ms
    drifted = ratio > config.max_latency_ratio
    return SignalOutcome(
        name=name,
        measured=True,
        drifted=drifted,
        message=(
            f"p95 latency {m.latency_p95_ms:.0f} ms = {ratio:.2f}x the evaluated "
            f"{m.latency_baseline_ms:.0f} ms ({'>' if drifted else '<='} {config.max_latency_ratio}x)"
        ),
        observed=m.latency_p95_ms,
        baseline=m.latency_baseline_ms,
        threshold=m.latency_baseline_ms * config.max_latency_ratio,
        effect=ratio,
    )


def _feedback(m: Measurements, config: MonitoringConfig) -> SignalOutcome:
    name, bar = "feedback_mean", config.min_feedback_mean
    if bar is None:
        return _not_measured(name, m, "monitoring.min_feedback_mean is not set")
    if m.feedback_mean is None or m.feedback_count < config.min_feedback:
        return _not_measured(name, m, f"{m.feedback_count} feedback scores, {config.min_feedback} needed")
    drifted = m.feedback_mean < bar
    return SignalOutcome(
        name=name,
        measured=True,
        drifted=drifted,
        message=(
            f"mean feedback {m.feedback_mean:.2f} {'<' if drifted else '>='} {bar} "
            f"over {m.feedback_count} scores"
        ),
        observed=m.feedback_mean,
        threshold=bar,
        effect=m.feedback_mean - bar,
    )


def _low_confidence(m: Measurements, config: MonitoringConfig) -> SignalOutcome:
    name, bar = "low_confidence_share", config.max_low_confidence_share
    if m.low_confidence_share is None:
        return _not_measured(name, m, "the provider returned no log-probabilities")
    drifted = m.low_confidence_share > bar
    return SignalOutcome(
        name=name,
        measured=True,
        drifted=drifted,
        message=(
            f"low-confidence answers {m.low_confidence_share:.1%} {'>' if drifted else '<='} {bar:.0%} "
            f"(mean token logprob < {config.low_confidence_logprob})"
        ),
        observed=m.low_confidence_share,
        threshold=bar,
        effect=m.low_confidence_share - bar,
    )


def _quality(m: Measurements, config: MonitoringConfig) -> tuple[SignalOutcome, ...]:
    """One ``quality:<metric>`` signal per sampled score; one unjudged signal when none could be."""
    if config.quality_sample == 0:
        return ()
    if not m.quality:  # nothing to score (no scorer configured) lists nothing; a thin sample says so
        reason = m.missing.get("quality")
        return (_unjudged(f"{QUALITY_PREFIX}sample", reason),) if reason else ()
    return tuple(_quality_score(score, config) for score in m.quality)


def _unjudged(name: str, reason: str) -> SignalOutcome:
    return SignalOutcome(name=name, measured=False, drifted=False, message=f"{name} not judged: {reason}")


def _quality_score(score: QualityScore, config: MonitoringConfig) -> SignalOutcome:
    name = f"{QUALITY_PREFIX}{score.metric}"
    if score.unjudged:
        return _unjudged(name, score.unjudged)
    if score.rows < config.quality_min_rows:
        return _unjudged(name, f"{score.rows} sampled rows scored, {config.quality_min_rows} needed")
    interval = f"{score.mean:.3g} [{score.low:.3g}, {score.high:.3g}] over {score.rows} sampled answers"
    evaluated = "" if score.evaluated is None else f", {score.evaluated:.3g} at evaluation"
    if score.threshold is None:
        return SignalOutcome(
            name=name,
            measured=True,
            drifted=False,
            message=f"{score.metric} {interval}{evaluated} (no gate threshold)",
            observed=score.mean,
            baseline=score.evaluated,
        )
    bar = score.threshold
    if score.greater_is_better:
        drifted, relation = score.high < bar, ("below" if score.high < bar else "not below")
    else:
        drifted, relation = score.low > bar, ("above" if score.low > bar else "not above")
    return SignalOutcome(
        name=name,
        measured=True,
        drifted=drifted,
        message=f"{score.metric} {interval}{evaluated} ({relation} the gate's {bar:.3g})",
        observed=score.mean,
        baseline=score.evaluated,
        threshold=bar,
        effect=score.mean - bar,
    )


def signal_names(verdict: DriftVerdict) -> Sequence[str]:
    """The names of the signals that drifted, in the order they were checked."""
    return [s.name for s in verdict.drifted_signals]
