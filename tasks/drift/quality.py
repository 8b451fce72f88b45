"""Sampled quality scores, the pure half: which requests are scored, by what, against which bars.

The monitor scores a share of served answers with the evaluation's own reference-free scorers
(adapter: :mod:`tuneops.tasks.drift.scoring`) and judges the means against the bars the spec's
evaluation gates set, so "scores drop below the deployment threshold" is read on production
traffic with the same scorer and the same bar as at release. The sample is picked by request id
(a hash, not a random draw), so the same window always scores the same rows and a re-run of a
check costs the same judge calls and gives the same verdict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import nan

from tuneops.spec import Spec
from tuneops.tasks.drift.rules import QualityScore
from tuneops.tasks.evaluation.stats import bootstrap_mean

PII_METRIC = "pii_leak"
REFERENCE_FREE = ("format", "refusal")  # evaluation metrics scored without a reference answer


@dataclass(frozen=True)
class Bar:
    """A gate's absolute bar on one metric; ``threshold`` None: scored and shown, not judged."""

    threshold: float | None
    greater_is_better: bool = True


def _unit_hash(request_id: str) -> float:
    digest = hashlib.sha256(request_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick_sample(request_ids: Sequence[str], fraction: float, max_rows: int) -> list[int]:
    """Indices of the requests to score: those whose id hashes under ``fraction``, at most ``max_rows``.

    Capped rows are the lowest hashes, so a larger window keeps the rows a smaller one picked
    wherever it can; the result is in window order.
    """
    if fraction <= 0:
        return []
    keyed = sorted((h, i) for i, rid in enumerate(request_ids) if (h := _unit_hash(rid)) < fraction)
    return sorted(i for _, i in keyed[:max_rows])


def scorable_metrics(spec: Spec) -> list[str]:
    """The reference-free metrics the evaluation of ``spec`` computes, in a stable order.

    ``format`` only when the spec has a format rule (without one every answer "complies");
    the judge's evaluators when ``evaluation.judge`` is set; ``pii_leak`` with ``evaluation.safety``.
    """
    config = spec.evaluation
    fmt = config.format
    has_format_rule = bool(fmt.regex or fmt.json_schema or fmt.required_sections or fmt.max_chars)
    metrics = [m for m in REFERENCE_FREE if m in config.metrics and (m != "format" or has_format_rule)]
    if config.judge is not None:
        metrics += [m for m in config.judge.evaluators if m not in metrics]
    if config.safety is not None:
        metrics.append(PII_METRIC)
    return metrics


def gate_bars(spec: Spec) -> dict[str, Bar]:
    """Each metric's absolute bar: the strictest gate ``threshold``; ``pii_leak`` its safety ceiling."""
    bars: dict[str, Bar] = {}
    for gate in spec.evaluation.gates:
        if gate.threshold is None:
            continue
        known = bars.get(gate.metric)
        stricter = (
            known is None
            or known.threshold is None
            or (
                gate.threshold > known.threshold
                if gate.greater_is_better
                else gate.threshold < known.threshold
            )
        )
        if stricter:
            bars[gate.metric] = Bar(gate.threshold, gate.greater_is_better)
    safety = spec.evaluation.safety
    if safety is not None and PII_METRIC in safety.ceilings:
        bars[PII_METRIC] = Bar(safety.ceilings[PII_METRIC], greater_is_better=False)
    return bars


def summarise_scores(
    per_metric: Mapping[str, Sequence[float]],
    bars: Mapping[str, Bar],
    evaluated: Mapping[str, float],
    *,
    confidence: float,
    resamples: int,
    unjudged: Mapping[str, str] | None = None,
) -> tuple[QualityScore, ...]:
    """Each metric's mean with a bootstrap interval (unscored rows, NaN, left out), and its bars.

    ``per_metric[metric][i]`` is the score of sampled answer ``i``; ``evaluated`` the evaluation's
    mean per metric for the served version; ``unjudged`` why a metric's scorer could not run
    (its score is then listed as not judged with that reason, never as a drop).
    """
    unjudged = unjudged or {}
    scores = []
    for metric, values in per_metric.items():
        interval = bootstrap_mean(values, resamples=resamples, confidence=confidence)
        bar = bars.get(metric, Bar(None))
        mean, low, high, n = (
            (interval.estimate, interval.low, interval.high, interval.n) if interval else (nan, nan, nan, 0)
        )  # no row scored (e.g. the judge failed on all): listed with 0 rows, so it shows as unjudged
        scores.append(
            QualityScore(
                metric=metric,
                mean=mean,
                low=low,
                high=high,
                rows=n,
                threshold=bar.threshold,
                greater_is_better=bar.greater_is_better,
                evaluated=evaluated.get(metric),
                unjudged=unjudged.get(metric),
            )
        )
    return tuple(scores)
