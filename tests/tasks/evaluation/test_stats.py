"""Bootstrap intervals and percentiles: exact cases, invariants, reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneops.tasks.evaluation.stats import Interval, bootstrap_mean, paired_bootstrap, percentile


def test_constant_difference_has_a_degenerate_interval() -> None:
    interval = paired_bootstrap([1.0, 2.0, 3.0], [0.5, 1.5, 2.5], resamples=200)
    assert interval == Interval(0.5, 0.5, 0.5, 3, 0.95)
    assert interval.excludes_zero()


def test_pairing_removes_row_difficulty_from_the_interval() -> None:
    """Rows of very different difficulty, candidate always +0.1: paired CI is tight and above 0."""
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0, 1, 200)
    interval = paired_bootstrap(list(difficulty + 0.1), list(difficulty), resamples=500)
    assert interval is not None and interval.low == pytest.approx(0.1) and interval.high == pytest.approx(0.1)


def test_noise_gives_an_interval_containing_zero() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 100), rng.normal(0, 1, 100)
    interval = paired_bootstrap(list(a), list(b), resamples=1000, seed=3)
    assert interval is not None and interval.low < 0 < interval.high and not interval.excludes_zero()


def test_same_seed_same_interval_other_seed_other_interval() -> None:
    rng = np.random.default_rng(5)
    a, b = list(rng.uniform(0, 1, 40)), list(rng.uniform(0, 1, 40))
    one = paired_bootstrap(a, b, seed=7)
    assert one == paired_bootstrap(a, b, seed=7)
    assert one != paired_bootstrap(a, b, seed=8)


def test_non_finite_pairs_are_dropped_and_counted() -> None:
    interval = paired_bootstrap([1.0, math.nan, 3.0, 4.0], [0.0, 1.0, math.inf, 3.0], resamples=100)
    assert interval is not None and interval.n == 2 and interval.estimate == 1.0


def test_nothing_finite_means_no_interval() -> None:
    assert paired_bootstrap([math.nan], [1.0]) is None
    assert paired_bootstrap([], []) is None
    assert bootstrap_mean([math.nan, math.nan]) is None


def test_single_row() -> None:
    assert paired_bootstrap([0.7], [0.2]) == Interval(
        pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5), 1, 0.95
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resamples": 0}, "resamples"),
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": 0.0}, "confidence"),
    ],
)
def test_bad_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paired_bootstrap([1.0], [1.0], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        bootstrap_mean([1.0], **kwargs)  # type: ignore[arg-type]


def test_unpaired_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_wider_confidence_gives_a_wider_interval() -> None:
    values = [0.1, 0.5, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 1.0]
    narrow, wide = bootstrap_mean(values, confidence=0.8), bootstrap_mean(values, confidence=0.99)
    assert narrow is not None and wide is not None
    assert wide.low <= narrow.low and wide.high >= narrow.high


def test_large_inputs_are_resampled_in_chunks() -> None:
    values = list(np.linspace(0, 1, 20_001))
    interval = bootstrap_mean(values, resamples=300)
    assert interval is not None and interval.low < 0.5 < interval.high and interval.high - interval.low < 0.02


def test_percentile() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile(list(map(float, range(1, 101))), 95) == pytest.approx(95.05)
    assert percentile([math.nan, 2.0], 95) == 2.0
    assert percentile([], 95) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


scores = st.lists(st.floats(min_value=-100, max_value=100, allow_nan=False), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(values=scores, seed=st.integers(0, 2**16))
def test_interval_contains_the_mean_and_stays_within_the_data(values: list[float], seed: int) -> None:
    interval = bootstrap_mean(values, resamples=200, seed=seed)
    assert interval is not None
    tol = 1e-9 * max(1.0, max(abs(v) for v in values))
    assert min(values) - tol <= interval.low <= interval.estimate + tol
    assert interval.estimate - tol <= interval.high <= max(values) + tol


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(st.floats(-10, 10), st.floats(-10, 10)), min_size=1, max_size=30))
def test_swapping_models_mirrors_the_interval(pairs: list[tuple[float, float]]) -> None:
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    forward, backward = paired_bootstrap(a, b, resamples=200), paired_bootstrap(b, a, resamples=200)
    assert forward is not None and backward is not None
    assert forward.estimate == pytest.approx(-backward.estimate, abs=1e-9)
    assert forward.low == pytest.approx(-backward.high, abs=1e-9)
    assert forward.high == pytest.approx(-backward.low, abs=1e-9)
