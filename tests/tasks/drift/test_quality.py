"""Sampled quality scores, the pure half: the deterministic sample, the scorers chosen, the bars."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest

from tuneops.spec import Spec
from tuneops.tasks.drift.quality import Bar, gate_bars, pick_sample, scorable_metrics, summarise_scores


def _spec(**evaluation: Any) -> Spec:
    return Spec.model_validate(
        {"model": {"name": "m", "base_model": "b"}, "data": {"train": "t.jsonl"}, "evaluation": evaluation}
    )


def test_the_sample_is_picked_by_request_id_and_is_stable() -> None:
    ids = [uuid.UUID(int=i).hex for i in range(5000)]
    picked = pick_sample(ids, 0.1, 10_000)
    assert 400 < len(picked) < 600  # ~10% of the ids
    assert picked == sorted(picked) and picked == pick_sample(list(ids), 0.1, 10_000)
    shuffled = list(reversed(ids))  # the same requests in another order: the same requests picked
    assert {shuffled[i] for i in pick_sample(shuffled, 0.1, 10_000)} == {ids[i] for i in picked}
    assert set(pick_sample(ids, 0.05, 10_000)) <= set(picked)  # a smaller share is a subset


def test_the_sample_is_capped_and_zero_is_off() -> None:
    ids = [uuid.UUID(int=i).hex for i in range(5000)]
    capped = pick_sample(ids, 0.5, 200)
    assert len(capped) == 200
    assert set(capped) <= set(pick_sample(ids, 0.5, 300))  # the cap keeps the lowest hashes
    assert pick_sample(ids, 0.0, 200) == [] and len(pick_sample(ids, 1.0, 10_000)) == 5000


def test_scorers_follow_the_evaluation() -> None:
    assert scorable_metrics(_spec()) == []  # format without a rule: every answer would comply
    assert scorable_metrics(_spec(format={"regex": "^A"})) == ["format"]
    assert scorable_metrics(_spec(metrics=["f1", "refusal"], format={"max_chars": 9})) == ["refusal"]
    judged = _spec(
        metrics=["format"],
        format={"required_sections": ["Decision"]},
        judge={"base_url": "http://127.0.0.1:1/v1", "model": "j", "evaluators": ["relevance"]},
        safety={},
    )
    assert scorable_metrics(judged) == ["format", "relevance", "pii_leak"]


def test_bars_are_the_strictest_gate_threshold_and_the_pii_ceiling() -> None:
    spec = _spec(
        gates=[
            {"metric": "format", "threshold": 0.8},
            {"metric": "format", "threshold": 0.9},
            {"metric": "format", "min_absolute_change": 0.1},  # relative gate: no absolute bar
            {"metric": "refusal", "threshold": 0.1, "greater_is_better": False},
            {"metric": "refusal", "threshold": 0.2, "greater_is_better": False},
        ],
        safety={},
    )
    assert gate_bars(spec) == {
        "format": Bar(0.9),
        "refusal": Bar(0.1, greater_is_better=False),
        "pii_leak": Bar(0.0, greater_is_better=False),
    }
    assert gate_bars(_spec()) == {}


def test_scores_carry_an_interval_their_bar_and_the_evaluated_mean() -> None:
    values = {"format": [1.0] * 30 + [0.0] * 10, "relevance": [math.nan] * 5, "refusal": [0.0, math.nan, 1.0]}
    scores = {
        s.metric: s
        for s in summarise_scores(
            values, {"format": Bar(0.9)}, {"format": 0.97}, confidence=0.95, resamples=1000
        )
    }
    fmt = scores["format"]
    assert fmt.mean == pytest.approx(0.75) and fmt.low < 0.75 < fmt.high and fmt.rows == 40
    assert (fmt.threshold, fmt.greater_is_better, fmt.evaluated) == (0.9, True, 0.97)
    assert scores["relevance"].rows == 0 and math.isnan(scores["relevance"].mean)  # nothing scored
    assert scores["refusal"].rows == 2 and scores["refusal"].threshold is None
