"""The drift statistics: numbers computed from two samples, no decision and no I/O.

Each function takes plain arrays (embeddings, token lengths, per-request flags) and returns a
frozen result; :mod:`tuneops.tasks.drift.rules` turns them into a verdict with the thresholds of
``monitoring:``. The libraries are the well-kept ones (numpy, scipy, scikit-learn); nothing here
talks to Prefect, MLflow or a provider.

* **Domain classifier** (:func:`domain_classifier_auc`): a logistic regression learns to tell
  reference embeddings from current ones; its out-of-fold ROC AUC is ~0.5 when it cannot (same
  distribution) and rises with the share of prompts it can single out. The interval is Hanley &
  McNeil's normal approximation, so a verdict can require the *lower* bound above the threshold.
* **PSI** (:func:`population_stability_index`) on prompt token lengths, bins at the reference's
  deciles (< 0.1 none, 0.1-0.25 moderate, > 0.25 significant, the usual reading).
* **Out-of-distribution share** (:func:`out_of_distribution_share`): the share of current prompts
  whose cosine distance to the nearest reference prompt exceeds the reference's own 99th
  percentile of leave-one-out nearest-neighbour distances (~1% when nothing changed).
* **Rates** (:func:`rate_increase`): an observed rate (refusals, errors, format failures) against
  the rate the evaluation measured, with a one-sided exact binomial p-value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as scipy_stats

PSI_BINS = 10
PSI_EPSILON = 1e-4  # an empty bin would make PSI infinite; this is the share it counts as
NN_CHUNK = 1024


@dataclass(frozen=True)
class AucResult:
    """Out-of-fold ROC AUC of a reference-vs-current classifier, with its confidence interval."""

    auc: float
    low: float
    high: float
    n_reference: int
    n_current: int


@dataclass(frozen=True)
class OodResult:
    """Share of current points farther from the reference than the reference's own quantile."""

    share: float
    expected: float
    distance_threshold: float
    n_current: int


@dataclass(frozen=True)
class RateTest:
    """An observed rate against the rate the evaluation measured (one-sided: worse only)."""

    observed: float
    baseline: float
    n: int
    p_value: float

    @property
    def increase(self) -> float:
        return self.observed - self.baseline


def hanley_mcneil_interval(
    auc: float, n_pos: int, n_neg: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Normal-approximation interval of an AUC (Hanley & McNeil, Radiology 1982)."""
    if n_pos < 1 or n_neg < 1:
        raise ValueError("an AUC interval needs at least one point in each class")
    q1 = auc / (2 - auc)
    q2 = 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    z = float(scipy_stats.norm.ppf(0.5 + confidence / 2))
    half = z * math.sqrt(max(variance, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def domain_classifier_auc(
    reference: ArrayLike,
    current: ArrayLike,
    *,
    folds: int = 2,
    seed: int = 0,
    confidence: float = 0.95,
) -> AucResult:
    """Out-of-fold AUC of a logistic regression separating ``current`` rows from ``reference`` rows.

    Cross-validation keeps the AUC honest: a classifier scored on the rows it learned from finds
    "drift" in any two samples of 384 dimensions.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    ref, cur = _matrix(reference), _matrix(current)
    if len(ref) < folds or len(cur) < folds:
        raise ValueError(f"a domain classifier needs at least {folds} rows on each side")
    features = np.vstack([ref, cur])
    labels = np.concatenate([np.zeros(len(ref)), np.ones(len(cur))])
    classifier = LogisticRegression(C=1.0, max_iter=200)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(classifier, features, labels, cv=splitter, method="decision_function")
    auc = float(roc_auc_score(labels, scores))
    low, high = hanley_mcneil_interval(auc, len(cur), len(ref), confidence)
    return AucResult(auc=auc, low=low, high=high, n_reference=len(ref), n_current=len(cur))


def population_stability_index(reference: ArrayLike, current: ArrayLike, bins: int = PSI_BINS) -> float:
    """PSI of ``current`` against ``reference``, with bin edges at the reference's quantiles.

    Ties (token lengths are integers) can merge quantile edges; duplicates are dropped, so a
    reference of one repeated value has a single bin and a PSI of 0 against itself.
    """
    ref, cur = _vector(reference), _vector(current)
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError("PSI needs values on both sides")
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_share = _bin_shares(ref, inner)
    cur_share = _bin_shares(cur, inner)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def _bin_shares(values: NDArray[np.float64], inner_edges: NDArray[np.float64]) -> NDArray[np.float64]:
    counts = np.bincount(np.searchsorted(inner_edges, values, side="right"), minlength=len(inner_edges) + 1)
    return np.maximum(counts / len(values), PSI_EPSILON)


def nearest_neighbour_distances(
    query: ArrayLike, reference: ArrayLike, *, exclude_self: bool = False
) -> NDArray[np.float64]:
    """Cosine distance from each query row to its nearest reference row.

    With ``exclude_self`` the query *is* the reference and each row's own match is skipped
    (leave-one-out), which is how the reference's distance distribution is measured.
    """
    q, r = _unit_rows(query), _unit_rows(reference)
    if exclude_self and q.shape != r.shape:
        raise ValueError("exclude_self needs the query to be the reference")
    if len(r) < (2 if exclude_self else 1):
        raise ValueError("too few reference rows for a nearest neighbour")
    nearest = np.empty(len(q))
    for start in range(0, len(q), NN_CHUNK):
        similarity = q[start : start + NN_CHUNK] @ r.T
        if exclude_self:
            rows = np.arange(similarity.shape[0])
            similarity[rows, rows + start] = -np.inf
        nearest[start : start + NN_CHUNK] = similarity.max(axis=1)
    return np.clip(1.0 - nearest, 0.0, 2.0)


def out_of_distribution_share(reference: ArrayLike, current: ArrayLike, quantile: float = 0.99) -> OodResult:
    """Share of ``current`` beyond the reference's own ``quantile`` of nearest-neighbour distance."""
    if not 0 < quantile < 1:
        raise ValueError("quantile is in (0, 1)")
    own = nearest_neighbour_distances(reference, reference, exclude_self=True)
    threshold = float(np.quantile(own, quantile))
    distances = nearest_neighbour_distances(current, reference)
    return OodResult(
        share=float(np.mean(distances > threshold)),
        expected=1.0 - quantile,
        distance_threshold=threshold,
        n_current=len(distances),
    )


def rate_increase(flags: Sequence[bool], baseline: float) -> RateTest:
    """The rate of ``True`` in ``flags`` against ``baseline``; p-value of "no higher than baseline"."""
    n = len(flags)
    if n == 0:
        raise ValueError("a rate needs at least one observation")
    if not 0.0 <= baseline <= 1.0:
        raise ValueError(f"a baseline rate is in [0, 1], got {baseline}")
    k = int(sum(bool(f) for f in flags))
    p_value = (
        float(scipy_stats.binomtest(k, n, baseline, alternative="greater").pvalue) if baseline < 1 else 1.0
    )
    return RateTest(observed=k / n, baseline=baseline, n=n, p_value=p_value)


def percentile(values: ArrayLike, q: float) -> float:
    """The ``q``-th percentile (linear interpolation); NaN for no values."""
    data = _vector(values)
    return float(np.percentile(data, q)) if len(data) else math.nan


def low_confidence_share(mean_logprobs: ArrayLike, threshold: float) -> float:
    """Share of answers whose mean token log-probability is below ``threshold``."""
    data = _vector(mean_logprobs)
    if len(data) == 0:
        raise ValueError("no log-probabilities to judge")
    return float(np.mean(data < threshold))


def _vector(values: ArrayLike) -> NDArray[np.float64]:
    data = np.asarray(values, dtype=np.float64).ravel()
    return data[np.isfinite(data)]


def _matrix(values: ArrayLike) -> NDArray[np.float64]:
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-d array of embeddings, got shape {data.shape}")
    return data


def _unit_rows(values: ArrayLike) -> NDArray[np.float64]:
    data = _matrix(values)
    norms = np.linalg.norm(data, axis=1, keepdims=True)
    return data / np.where(norms == 0, 1.0, norms)
