"""Statistics for comparing models on the same rows: means, bootstrap intervals, percentiles.

Every model answers the *same* test rows, so the comparison is paired: resampling rows (not the
two models independently) keeps the per-row correlation and gives a much tighter, honest interval
for "candidate minus baseline". Seeded, so the same inputs always give the same interval and a
gate decision can be reproduced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with a bootstrap confidence interval ``[low, high]`` over ``n`` rows."""

    estimate: float
    low: float
    high: float
    n: int
    confidence: float

    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of zero: the difference is not noise."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "confidence": self.confidence,
        }


def _check(resamples: int, confidence: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")


def _percentile_interval(
    values: np.ndarray, resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    n = len(values)
    if n == 1:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    # Resample in chunks so 10k rows x 10k resamples never needs a 100M-cell matrix at once.
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_mean(
    values: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Interval | None:
    """Mean of ``values`` with a percentile bootstrap interval; None when there is no finite value.

    Non-finite values (NaN, inf) are dropped: they stand for rows an evaluator could not score,
    and ``n`` in the result says how many rows the interval really rests on.
    """
    _check(resamples, confidence)
    arr = np.asarray(list(values), dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return None
    low, high = _percentile_interval(arr, resamples, confidence, seed)
    return Interval(float(arr.mean()), low, high, int(arr.size), confidence)


def paired_bootstrap(
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Interval | None:
    """Interval for mean(candidate - baseline) over paired rows; None when no pair is complete.

    Args:
        candidate: per-row scores of the candidate, row ``i`` paired with ``baseline[i]``.
        baseline: per-row scores of the model compared against, same length.
        resamples: bootstrap resamples.
        confidence: two-sided coverage of the interval, e.g. 0.95.
        seed: the random seed; same inputs and seed give the same interval.

    Raises:
        ValueError: the sequences differ in length (they would not be paired), or bad parameters.
    """
    _check(resamples, confidence)
    if len(candidate) != len(baseline):
        raise ValueError(f"paired scores differ in length: {len(candidate)} vs {len(baseline)}")
    cand = np.asarray(list(candidate), dtype=float)
    base = np.asarray(list(baseline), dtype=float)
    diffs = cand - base
    diffs = diffs[np.isfinite(cand) & np.isfinite(base)]
    if diffs.size == 0:
        return None
    low, high = _percentile_interval(diffs, resamples, confidence, seed)
    return Interval(float(diffs.mean()), low, high, int(diffs.size), confidence)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear interpolation) of the finite values, None if none."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    return float(np.percentile(np.asarray(finite, dtype=float), q))
