"""The drift statistics on synthetic samples: known values, edge cases, false alarms and power."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuneops.tasks.drift import stats


def _cloud(rng: np.random.Generator, n: int, topic: int = 0, dims: int = 16) -> np.ndarray:
    """Points around one direction per topic, like sentence embeddings of one subject."""
    points = rng.normal(size=(n, dims))
    points[:, topic] += 4.0
    return points


# --- PSI


def test_psi_of_a_sample_against_itself_is_zero() -> None:
    values = np.arange(1000)
    assert stats.population_stability_index(values, values) == pytest.approx(0.0, abs=1e-12)


def test_psi_matches_the_formula_on_hand_made_bins() -> None:
    reference = np.repeat([1, 2], 500)  # one inner edge at the median: two bins of 50%
    current = np.repeat([1, 2], [800, 200])
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert stats.population_stability_index(reference, current) == pytest.approx(expected)


def test_psi_stays_finite_when_a_bin_is_empty() -> None:
    reference = np.arange(100)
    current = np.full(100, 1000)  # everything beyond the last edge
    value = stats.population_stability_index(reference, current)
    assert math.isfinite(value) and value > 1


def test_psi_of_a_constant_reference_has_one_bin() -> None:
    assert stats.population_stability_index([5] * 50, [5] * 30) == pytest.approx(0.0)


def test_psi_ignores_non_finite_values_and_refuses_empty_sides() -> None:
    assert stats.population_stability_index([1, 2, 3, np.nan], [1, 2, 3]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="both sides"):
        stats.population_stability_index([], [1])


def test_psi_false_alarms_and_power_on_token_lengths() -> None:
    rng = np.random.default_rng(0)
    reference = rng.poisson(60, 3000)
    quiet = [stats.population_stability_index(reference, rng.poisson(60, 2000)) for _ in range(100)]
    doubled = [stats.population_stability_index(reference, rng.poisson(120, 2000)) for _ in range(100)]
    assert max(quiet) < 0.1
    assert min(doubled) > 0.25


# --- AUC


def test_hanley_mcneil_interval_contains_the_auc_and_narrows_with_data() -> None:
    low, high = stats.hanley_mcneil_interval(0.7, 100, 100)
    low2, high2 = stats.hanley_mcneil_interval(0.7, 10_000, 10_000)
    assert low < 0.7 < high and low2 < 0.7 < high2
    assert high2 - low2 < (high - low) / 5
    assert stats.hanley_mcneil_interval(1.0, 10, 10) == (1.0, 1.0)
    with pytest.raises(ValueError):
        stats.hanley_mcneil_interval(0.5, 0, 10)


def test_domain_classifier_auc_is_near_half_on_one_distribution() -> None:
    rng = np.random.default_rng(1)
    result = stats.domain_classifier_auc(_cloud(rng, 500), _cloud(rng, 500))
    assert result.low < 0.5 + 0.05 < result.high + 0.05
    assert abs(result.auc - 0.5) < 0.06
    assert (result.n_reference, result.n_current) == (500, 500)


def test_domain_classifier_auc_separates_shifted_clouds() -> None:
    rng = np.random.default_rng(2)
    result = stats.domain_classifier_auc(_cloud(rng, 500), _cloud(rng, 500, topic=1))
    assert result.low > 0.9


def test_domain_classifier_needs_two_d_input_and_enough_rows() -> None:
    with pytest.raises(ValueError, match="2-d"):
        stats.domain_classifier_auc(np.zeros(10), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="at least"):
        stats.domain_classifier_auc(np.zeros((1, 2)), np.zeros((10, 2)))


def test_domain_classifier_false_alarms_stay_under_five_percent() -> None:
    # the verdict's rule: drift when the interval's lower bound exceeds 0.55
    rng = np.random.default_rng(3)
    alarms = sum(
        stats.domain_classifier_auc(_cloud(rng, 300), _cloud(rng, 300), seed=i).low > 0.55 for i in range(100)
    )
    assert alarms <= 5


def test_domain_classifier_power_when_thirty_percent_come_from_elsewhere() -> None:
    rng = np.random.default_rng(4)
    hits = 0
    for i in range(100):
        current = np.vstack([_cloud(rng, 210), _cloud(rng, 90, topic=1)])
        hits += stats.domain_classifier_auc(_cloud(rng, 300), current, seed=i).low > 0.55
    assert hits >= 95


# --- nearest neighbours and OOD share


def test_nearest_neighbour_distance_is_cosine_and_skips_self_when_asked() -> None:
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    query = np.array([[2.0, 0.0], [-1.0, 0.0]])
    assert stats.nearest_neighbour_distances(query, reference) == pytest.approx([0.0, 1 - 0.0])
    own = stats.nearest_neighbour_distances(reference, reference, exclude_self=True)
    assert own == pytest.approx([1 - math.sqrt(0.5)] * 3)
    with pytest.raises(ValueError, match="query to be the reference"):
        stats.nearest_neighbour_distances(query, reference, exclude_self=True)


def test_nearest_neighbour_works_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    reference, query = _cloud(rng, 50), _cloud(rng, 37)
    whole = stats.nearest_neighbour_distances(query, reference)
    own = stats.nearest_neighbour_distances(reference, reference, exclude_self=True)
    monkeypatch.setattr(stats, "NN_CHUNK", 7)
    assert stats.nearest_neighbour_distances(query, reference) == pytest.approx(whole)
    assert stats.nearest_neighbour_distances(reference, reference, exclude_self=True) == pytest.approx(own)


def test_zero_vectors_do_not_divide_by_zero() -> None:
    distances = stats.nearest_neighbour_distances(np.zeros((2, 3)), np.eye(3))
    assert np.all(np.isfinite(distances))


def test_ood_share_is_about_one_percent_on_one_distribution_and_high_off_it() -> None:
    rng = np.random.default_rng(6)
    reference = _cloud(rng, 1000)
    quiet = stats.out_of_distribution_share(reference, _cloud(rng, 1000))
    assert quiet.expected == pytest.approx(0.01)
    assert quiet.share < 0.04
    far = stats.out_of_distribution_share(reference, np.vstack([_cloud(rng, 700), _cloud(rng, 300, topic=1)]))
    assert far.share > 0.25
    with pytest.raises(ValueError):
        stats.out_of_distribution_share(reference, reference, quantile=1.0)


# --- rates, percentiles, logprobs


def test_rate_increase_p_value_is_one_sided() -> None:
    worse = stats.rate_increase([True] * 30 + [False] * 70, 0.1)
    assert worse.observed == pytest.approx(0.3) and worse.increase == pytest.approx(0.2)
    assert worse.p_value < 1e-6
    better = stats.rate_increase([True] * 2 + [False] * 98, 0.1)
    assert better.p_value > 0.9
    assert stats.rate_increase([True], 1.0).p_value == 1.0


def test_rate_increase_validates_its_inputs() -> None:
    with pytest.raises(ValueError, match="at least one"):
        stats.rate_increase([], 0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.rate_increase([True], 1.5)


def test_percentile_and_low_confidence_share() -> None:
    assert stats.percentile(range(101), 95) == pytest.approx(95.0)
    assert math.isnan(stats.percentile([], 95))
    assert stats.low_confidence_share([-0.1, -2.0, -3.0, np.nan], -1.0) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        stats.low_confidence_share([], -1.0)
