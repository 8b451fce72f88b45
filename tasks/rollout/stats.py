"""Always-valid intervals for a rollout that is looked at after every analysis interval.

A fixed-horizon test peeked at repeatedly inflates false alarms far past its nominal level. The
intervals here are **confidence sequences**: with probability at least ``1 - alpha`` they cover
the true value at *every* look simultaneously, so the rollout may be judged as often as it likes
and stop as soon as an interval is decisive.

The construction is the normal-mixture (Robbins) boundary, the one behind Johari et al.'s mixture
SPRT ("Always Valid Inference", 2017) and Howard et al.'s confidence sequences ("Time-uniform,
nonparametric, nonasymptotic confidence sequences", 2021): an estimate ``theta_hat`` with variance
``v`` (information ``1 / v``) behaves like a Brownian motion in information time, and mixing the
likelihood ratio over a ``N(0, tau^2)`` prior on the effect gives a martingale whose crossing of
``1 / alpha`` bounds the error over all looks (Ville's inequality). Inverting it::

    |theta_hat - theta| < sqrt(v (v + tau^2) / tau^2 * (log((v + tau^2) / v) + 2 log(1 / alpha)))

``tau`` is the effect size the boundary is tightest for (in the metric's units). Variances are
plug-in estimates (asymptotic validity, as in Waudby-Smith et al.'s time-uniform CLT); proportions
are smoothed (``(x + 1) / (n + 2)``) in a difference so a run of zeros never yields a zero
variance, and a single rate's interval is inverted Wilson-style (variance at the candidate rate). Quantiles
(p95 latency) use Howard & Ramdas's construction: an always-valid band on the empirical CDF at the
quantile's level, read back through the order statistics; its coverage needs no variance estimate.

One-sided claims ("the challenger is worse by more than the margin") use one side of a two-sided
sequence at level ``2 * alpha``: by symmetry each side crosses with probability at most ``alpha``.

Pure: stdlib only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

_NORMAL = NormalDist()


@dataclass(frozen=True)
class SequentialInterval:
    """An always-valid interval ``[low, high]`` for ``estimate`` (confidence over all looks)."""

    estimate: float
    low: float
    high: float
    confidence: float

    def to_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "confidence": self.confidence}


@dataclass(frozen=True)
class Moments:
    """Count, sum and sum of squares of a numeric signal (feedback scores, cost per request)."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    @classmethod
    def of(cls, values: Sequence[float]) -> Moments:
        return cls(len(values), float(sum(values)), float(sum(v * v for v in values)))

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.n + other.n, self.total + other.total, self.total_sq + other.total_sq)

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    @property
    def variance(self) -> float | None:
        """The sample variance (``n - 1``), None below two values."""
        if self.n < 2:
            return None
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))


def mixture_radius(variance: float, alpha: float, tau: float) -> float:
    """Half-width of the normal-mixture confidence sequence for an estimate of ``variance``.

    Args:
        variance: the estimate's variance at this look (e.g. ``p (1 - p) / n``); must be > 0.
        alpha: the error allowed over all looks together (two-sided).
        tau: the prior's scale: the effect size, in the estimate's units, it is tightest for.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha is in (0, 1), not {alpha}")
    if tau <= 0:
        raise ValueError(f"tau must be positive, not {tau}")
    if variance <= 0 or not math.isfinite(variance):
        return math.inf if not math.isfinite(variance) else 0.0
    t2 = tau * tau
    spread = math.log((variance + t2) / variance) + 2 * math.log(1 / alpha)
    return math.sqrt(variance * (variance + t2) / t2 * spread)


def _interval(estimate: float, variance: float, alpha: float, tau: float) -> SequentialInterval:
    r = mixture_radius(variance, alpha, tau)
    return SequentialInterval(estimate, estimate - r, estimate + r, 1 - alpha)


def _smoothed(x: int, n: int) -> float:
    return (x + 1) / (n + 2)


def proportion_interval(x: int, n: int, *, alpha: float, tau: float) -> SequentialInterval:
    """Always-valid interval for a rate ``x / n``, Wilson-style.

    The variance is taken at each candidate rate ``p`` (``p (1 - p) / n``), not at the estimate,
    and the interval is every ``p`` the boundary does not reject: a run of rare events does not
    shrink it to nothing the way a plug-in variance would.
    """
    if n <= 0:
        return SequentialInterval(math.nan, 0.0, 1.0, 1 - alpha)
    estimate = x / n

    def inside(p: float) -> bool:
        return abs(estimate - p) <= mixture_radius(max(p * (1 - p), 1e-12) / n, alpha, tau)

    def edge(outside: float) -> float:
        lo, hi = (outside, estimate) if outside < estimate else (estimate, outside)
        if inside(outside):
            return outside
        for _ in range(60):  # bisection to ~1e-18: far below any rate's resolution
            mid = (lo + hi) / 2
            if inside(mid) == (outside < estimate):
                hi = mid
            else:
                lo = mid
        return lo if outside < estimate else hi

    return SequentialInterval(estimate, edge(0.0), edge(1.0), 1 - alpha)


def proportion_difference_interval(
    x1: int, n1: int, x0: int, n0: int, *, alpha: float, tau: float
) -> SequentialInterval:
    """Always-valid interval for ``x1 / n1 - x0 / n0`` (arm 1 minus arm 0), any allocation."""
    if n1 <= 0 or n0 <= 0:
        return SequentialInterval(math.nan, -1.0, 1.0, 1 - alpha)
    p1, p0 = _smoothed(x1, n1), _smoothed(x0, n0)
    variance = p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0
    iv = _interval(x1 / n1 - x0 / n0, variance, alpha, tau)
    return SequentialInterval(iv.estimate, max(-1.0, iv.low), min(1.0, iv.high), iv.confidence)


def mean_interval(m: Moments, *, alpha: float, tau: float) -> SequentialInterval:
    """Always-valid interval for a mean (plug-in variance; infinite below two values)."""
    var = m.variance
    if m.mean is None or var is None:
        return SequentialInterval(math.nan, -math.inf, math.inf, 1 - alpha)
    return _interval(m.mean, var / m.n, alpha, tau)


def mean_difference_interval(m1: Moments, m0: Moments, *, alpha: float, tau: float) -> SequentialInterval:
    """Always-valid interval for ``mean(m1) - mean(m0)`` (Welch-style plug-in variance)."""
    v1, v0 = m1.variance, m0.variance
    if m1.mean is None or m0.mean is None or v1 is None or v0 is None:
        return SequentialInterval(math.nan, -math.inf, math.inf, 1 - alpha)
    return _interval(m1.mean - m0.mean, v1 / m1.n + v0 / m0.n, alpha, tau)


def relative_difference_interval(m1: Moments, m0: Moments, *, alpha: float, tau: float) -> SequentialInterval:
    """Always-valid interval for ``mean(m1) / mean(m0) - 1`` (delta method; needs mean(m0) > 0)."""
    v1, v0, a, b = m1.variance, m0.variance, m1.mean, m0.mean
    if a is None or b is None or v1 is None or v0 is None or b <= 0:
        return SequentialInterval(math.nan, -math.inf, math.inf, 1 - alpha)
    variance = (v1 / m1.n) / (b * b) + (a * a) * (v0 / m0.n) / (b**4)
    return _interval(a / b - 1, variance, alpha, tau)


def quantile(sorted_values: Sequence[float], p: float) -> float:
    """The empirical ``p``-quantile (nearest rank) of ascending ``sorted_values``."""
    if not sorted_values:
        return math.nan
    rank = min(len(sorted_values), max(1, math.ceil(p * len(sorted_values))))
    return float(sorted_values[rank - 1])


# The CDF band is tightest for deviations of about two points at the quantile's level.
QUANTILE_TAU = 0.02


def quantile_interval(sorted_values: Sequence[float], p: float, *, alpha: float) -> SequentialInterval:
    """Always-valid interval for the ``p``-quantile from ascending ``sorted_values``.

    The count of values below the true quantile is Binomial(n, p) with a *known* variance, so a
    sequence on that count at level ``alpha`` maps to order statistics (Howard & Ramdas, 2022).
    An end beyond the data is infinite: too few values to bound it.
    """
    n = len(sorted_values)
    if n == 0:
        return SequentialInterval(math.nan, -math.inf, math.inf, 1 - alpha)
    u = mixture_radius(p * (1 - p) / n, alpha, QUANTILE_TAU)
    lo_rank, hi_rank = math.floor(n * (p - u)), math.ceil(n * (p + u))
    low = float(sorted_values[lo_rank - 1]) if lo_rank >= 1 else -math.inf
    high = float(sorted_values[hi_rank - 1]) if hi_rank <= n else math.inf
    return SequentialInterval(quantile(sorted_values, p), low, high, 1 - alpha)


def proportion_sample_size(
    baseline: float, mde: float, *, alpha: float, power: float, tau: float, limit: int = 10_000_000
) -> int:
    """Requests per arm for the sequential test to see a drop of ``mde`` from ``baseline``.

    The smallest equal-arm ``n`` at which the always-valid (one-sided ``alpha``) bound excludes
    no difference when the true difference is ``mde``, with probability ``power``:
    ``radius(v(n)) + z_power * sqrt(v(n)) <= mde``. Larger than the fixed-horizon formula: the
    price of being allowed to look at every interval.
    """
    if not 0 < mde < 1:
        raise ValueError(f"the minimum detectable effect is in (0, 1), not {mde}")
    if not 0 < power < 1:
        raise ValueError(f"power is in (0, 1), not {power}")
    p0 = min(max(baseline, 1e-6), 1 - 1e-6)
    p1 = min(max(p0 - mde, 1e-6), 1 - 1e-6) if p0 - mde > 0 else min(p0 + mde, 1 - 1e-6)
    z = _NORMAL.inv_cdf(power)

    def detects(n: int) -> bool:
        v = (p0 * (1 - p0) + p1 * (1 - p1)) / n
        return mixture_radius(v, 2 * alpha, tau) + z * math.sqrt(v) <= mde

    low, high = 1, 2
    while not detects(high):
        low, high = high, high * 2
        if high > limit:
            raise ValueError(f"a difference of {mde} needs more than {limit} requests per arm")
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if detects(mid) else (mid, high)
    return high
