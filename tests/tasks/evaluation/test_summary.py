"""Per-model summaries, paired comparisons, the gate's view and the markdown table."""

from __future__ import annotations

import math

import pytest

from tuneops.tasks.evaluation.summary import compare, markdown_table, scores_for_gate, summarise_model
from tuneops.tasks.evaluation.types import Answer, ModelAnswers, ModelUnderTest

BOOT = {"resamples": 200, "confidence": 0.9, "seed": 1}


def answers(label: str, n: int, priced: bool = False) -> ModelAnswers:
    price = 1.0 if priced else None
    model = ModelUnderTest(label, "http://x/v1", f"{label}-model", price_per_1m_input_tokens=price)
    rows = tuple(Answer(i, "a", float(10 * (i + 1)), 1000, 10, 0.001 if priced else 0.0) for i in range(n))
    return ModelAnswers(model, rows)


def test_summary_latency_cost_and_intervals() -> None:
    summary = summarise_model(answers("candidate", 20, priced=True), {"f1": [1.0] * 20}, **BOOT)
    assert summary.rows == 20 and summary.tokens == 20 * 1010
    assert summary.latency_p50_ms == 105.0 and summary.latency_p95_ms == 190.5
    assert summary.cost_per_1k_usd == pytest.approx(1.0)  # 0.001 USD a request
    assert summary.mean("f1") == 1.0 and summary.mean("rouge") is None


def test_unpriced_models_have_no_cost() -> None:
    assert summarise_model(answers("base", 3), {}, **BOOT).cost_per_1k_usd is None


def test_rows_an_evaluator_could_not_score_are_unscored_for_the_gate() -> None:
    scores = {"f1": [1.0, math.nan, 0.5], "rouge": [math.nan] * 3, "format": [1.0] * 3}
    summary = summarise_model(answers("candidate", 3), scores, **BOOT)
    view = scores_for_gate(summary, failed_rows=0)
    assert view.unscored == {"f1": 1, "rouge": 3}
    assert view.mean("f1") is None and view.mean("rouge") is None and view.mean("format") == 1.0


def test_compare_and_the_markdown_table() -> None:
    cand_scores, base_scores = {"f1": [1.0, 1.0, 0.9]}, {"f1": [0.2, 0.3, 0.1], "rouge": [0.1] * 3}
    comparison = compare(cand_scores, base_scores, **BOOT)
    assert set(comparison) == {"f1"} and comparison["f1"] is not None and comparison["f1"].low > 0
    cand = summarise_model(answers("candidate", 3), cand_scores, **BOOT)
    base = summarise_model(answers("base", 3), base_scores, **BOOT)
    table = markdown_table([cand, base], {"base": comparison}, "candidate", 0.9)
    lines = table.splitlines()
    assert lines[0] == "| metric | candidate (candidate-model) | base (base-model) | candidate - base |"
    assert lines[2].startswith("| f1 | 0.967 [") and lines[2].endswith("] * |")
    assert lines[3] == "| rouge | n/a | 0.100 [0.100, 0.100] | n/a |"
    assert "| latency p95 (ms) | 29 | 29 |  |" in lines  # 95th percentile of 10, 20, 30 ms
    assert lines[-1].startswith("Means with 90% bootstrap intervals")
