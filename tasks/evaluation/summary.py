"""Aggregate per-row scores into per-model summaries, paired comparisons and a markdown table.

Pure (numpy only): what the report shows and what the gate decides on come from the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tuneops.tasks.evaluation.rules import ModelScores
from tuneops.tasks.evaluation.stats import Interval, bootstrap_mean, paired_bootstrap, percentile
from tuneops.tasks.evaluation.types import ModelAnswers, ModelSummary

Comparisons = dict[str, dict[str, Interval | None]]


def summarise_model(
    answers: ModelAnswers,
    row_scores: Mapping[str, Sequence[float]],
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> ModelSummary:
    """Means with bootstrap intervals per metric, latency percentiles and cost of one model."""
    ok = [a for a in answers.answers if a.ok]
    latencies = [a.latency_ms for a in ok if a.latency_ms is not None]
    cost = sum(a.cost_usd for a in ok)
    metrics = {
        metric: bootstrap_mean(values, resamples=resamples, confidence=confidence, seed=seed)
        for metric, values in row_scores.items()
    }
    return ModelSummary(
        label=answers.label,
        model=answers.model.model,
        rows=len(answers.answers),
        metrics=metrics,
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        cost_per_1k_usd=cost / len(ok) * 1000 if ok and answers.model.priced else None,
        tokens=sum(a.prompt_tokens + a.completion_tokens for a in ok),
    )


def compare(
    candidate: Mapping[str, Sequence[float]],
    other: Mapping[str, Sequence[float]],
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, Interval | None]:
    """Paired intervals of candidate - other for every metric both have."""
    return {
        metric: paired_bootstrap(
            candidate[metric], other[metric], resamples=resamples, confidence=confidence, seed=seed
        )
        for metric in candidate
        if metric in other
    }


def scores_for_gate(
    summary: ModelSummary, differences: Mapping[str, Interval | None] | None = None, failed_rows: int = 0
) -> ModelScores:
    """The gate's view of a summary; a metric scored on fewer rows than answered is unscored."""
    unscored = {
        metric: summary.rows - (interval.n if interval is not None else 0)
        for metric, interval in summary.metrics.items()
        if (interval.n if interval is not None else 0) < summary.rows
    }
    return ModelScores(
        label=summary.label,
        means={metric: summary.mean(metric) for metric in summary.metrics},
        latency_p95_ms=summary.latency_p95_ms,
        cost_per_1k_usd=summary.cost_per_1k_usd,
        differences=dict(differences or {}),
        failed_rows=failed_rows,
        unscored=unscored,
    )


def _cell(interval: Interval | None) -> str:
    if interval is None:
        return "n/a"
    return f"{interval.estimate:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def _diff_cell(interval: Interval | None) -> str:
    if interval is None:
        return "n/a"
    mark = " *" if interval.excludes_zero() else ""
    return f"{interval.estimate:+.3f} [{interval.low:+.3f}, {interval.high:+.3f}]{mark}"


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def markdown_table(
    summaries: Sequence[ModelSummary], comparisons: Comparisons, candidate_label: str, confidence: float
) -> str:
    """Side-by-side table: one column per model, then one per candidate-minus-other difference."""
    metrics: list[str] = []
    for summary in summaries:
        metrics.extend(m for m in summary.metrics if m not in metrics)
    others = list(comparisons)
    header = ["metric", *(f"{s.label} ({s.model})" for s in summaries)]
    header += [f"{candidate_label} - {label}" for label in others]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric in metrics:
        cells = [metric, *(_cell(s.metrics.get(metric)) for s in summaries)]
        cells += [_diff_cell(comparisons[label].get(metric)) for label in others]
        lines.append("| " + " | ".join(cells) + " |")
    pad = [""] * len(others)
    for name, getter, fmt in (
        ("latency p50 (ms)", lambda s: s.latency_p50_ms, ".0f"),
        ("latency p95 (ms)", lambda s: s.latency_p95_ms, ".0f"),
        ("cost / 1k requests (USD)", lambda s: s.cost_per_1k_usd, ".4f"),
        ("rows", lambda s: float(s.rows), ".0f"),
    ):
        lines.append("| " + " | ".join([name, *(_num(getter(s), fmt) for s in summaries), *pad]) + " |")
    pct = round(confidence * 100)
    lines.append("")
    lines.append(f"Means with {pct}% bootstrap intervals; differences are paired, * = interval excludes 0.")
    return "\n".join(lines)
