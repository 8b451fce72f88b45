"""From a window of served requests and a reference to :class:`~tuneops.tasks.drift.rules.Measurements`.

Pure: the caller reads the request log and the training data and embeds the texts (adapters in
:mod:`tuneops.tasks.drift.sources` and :mod:`tuneops.tasks.drift.embed`); this module only decides
which rows each statistic sees and records why a signal could not be measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from tuneops.spec import MonitoringConfig
from tuneops.tasks.drift import stats
from tuneops.tasks.drift.rules import Measurements

SERVER_ERROR = 500


@dataclass(frozen=True)
class WindowSample:
    """The answered requests of one window, column by column (None where the log has no value)."""

    prompts: Sequence[str | None]
    prompt_tokens: Sequence[int | None]
    status_codes: Sequence[int]
    latencies_ms: Sequence[float]
    format_ok: Sequence[bool | None] = ()
    refusals: Sequence[bool | None] = ()
    feedback: Sequence[float | None] = ()
    mean_logprobs: Sequence[float | None] = ()

    @property
    def requests(self) -> int:
        return len(self.status_codes)


@dataclass(frozen=True)
class QualityBaseline:
    """What the evaluation measured for the served version (None: not measured)."""

    format_compliance: float | None = None
    refusal_rate: float | None = None
    error_rate: float | None = None
    latency_p95_ms: float | None = None
    base_latency_p95_ms: float | None = None
    scores: dict[str, float] = field(default_factory=dict)  # candidate means per metric (sampled scores)


@dataclass(frozen=True)
class Reference:
    """The training data the window is compared with: embeddings and prompt token lengths."""

    embeddings: NDArray[np.float32] | None
    prompt_tokens: Sequence[int]
    baseline: QualityBaseline = field(default_factory=QualityBaseline)
    description: str = "training data"


def sample_indices(n: int, size: int, seed: int) -> NDArray[np.int64]:
    """A reproducible sample of ``size`` indices out of ``n`` (all of them when ``n <= size``)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def texts_to_embed(window: WindowSample, config: MonitoringConfig, seed: int = 0) -> list[str]:
    """The window's prompts the embedding signals look at: a sample of the captured texts."""
    captured = [p for p in window.prompts if p]
    return [captured[i] for i in sample_indices(len(captured), config.embedding_sample, seed)]


def measure_window(
    window: WindowSample,
    reference: Reference,
    current_embeddings: NDArray[np.float32] | None,
    config: MonitoringConfig,
    *,
    seed: int = 0,
) -> Measurements:
    """Every statistic the verdict needs, for one window against one reference."""
    missing: dict[str, str] = {}
    embedding = ood = None
    if current_embeddings is None or len(current_embeddings) < config.min_requests // 4:
        reason = "prompt texts are not captured (serving.capture_text off)"
        missing["embedding_auc"] = missing["ood_share"] = reason
    elif reference.embeddings is None or len(reference.embeddings) < 20:
        missing["embedding_auc"] = missing["ood_share"] = f"too few {reference.description} prompts"
    else:
        ref = reference.embeddings[sample_indices(len(reference.embeddings), config.embedding_sample, seed)]
        embedding = stats.domain_classifier_auc(ref, current_embeddings, seed=seed)
        ood = stats.out_of_distribution_share(ref, current_embeddings, config.ood_quantile)

    tokens = [t for t in window.prompt_tokens if t is not None]
    psi = None
    if not tokens or not reference.prompt_tokens:
        missing["prompt_length_psi"] = "no prompt token counts"
    else:
        psi = stats.population_stability_index(reference.prompt_tokens, tokens)

    base = reference.baseline
    format_failures = _rate_vs(window.format_ok, base.format_compliance, invert=True)
    refusals = _rate_vs(window.refusals, base.refusal_rate)
    errors = None
    if base.error_rate is not None and window.requests:
        errors = stats.rate_increase([code >= SERVER_ERROR for code in window.status_codes], base.error_rate)

    ok_latencies = [
        lat for lat, code in zip(window.latencies_ms, window.status_codes, strict=True) if code < 400
    ]
    scores = [s for s in window.feedback if s is not None]
    logprobs = [lp for lp in window.mean_logprobs if lp is not None]
    if not logprobs:
        missing["low_confidence_share"] = (
            "no answer has a mean token logprob (serving.capture_logprobs off, or the provider returns none)"
        )
    return Measurements(
        requests=window.requests,
        embedding=embedding,
        prompt_length_psi=psi,
        ood=ood,
        format_failures=format_failures,
        refusals=refusals,
        errors=errors,
        latency_p95_ms=stats.percentile(ok_latencies, 95) if ok_latencies else None,
        latency_baseline_ms=base.latency_p95_ms,
        feedback_mean=float(np.mean(scores)) if scores else None,
        feedback_count=len(scores),
        low_confidence_share=(
            stats.low_confidence_share(logprobs, config.low_confidence_logprob) if logprobs else None
        ),
        missing=missing,
    )


def _rate_vs(
    flags: Sequence[bool | None], baseline: float | None, *, invert: bool = False
) -> stats.RateTest | None:
    """A rate test of the known ``flags`` against ``baseline`` (``invert``: flags say "ok")."""
    known = [bool(f) for f in flags if f is not None]
    if baseline is None or not known:
        return None
    if invert:
        return stats.rate_increase([not f for f in known], min(max(1.0 - baseline, 0.0), 1.0))
    return stats.rate_increase(known, min(max(baseline, 0.0), 1.0))
