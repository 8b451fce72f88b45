"""decide_promotion: every gate kind, both directions, missing scores, champion, ceilings."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tuneops.spec import GateConfig
from tuneops.tasks.evaluation.rules import Gate, ModelScores, decide_promotion, overfitting_check
from tuneops.tasks.evaluation.stats import Interval


def scores(
    label: str, differences: dict[str, Interval | None] | None = None, **means: float | None
) -> ModelScores:
    return ModelScores(label, means, latency_p95_ms=100.0, cost_per_1k_usd=1.0, differences=differences or {})


def ci(low: float, high: float) -> Interval:
    return Interval((low + high) / 2, low, high, 50, 0.95)


CAND = scores("candidate", f1=0.8, latency=None)
BASE = scores("base", f1=0.6)


def kinds(decision) -> list[tuple[str, bool]]:
    return [(c.kind, c.passed) for c in decision.checks]


def test_no_gates_passes_with_no_checks() -> None:
    decision = decide_promotion(CAND, [BASE], [])
    assert decision.passed and decision.checks == ()
    assert decision.summary() == "gate passed: no gates configured"


@pytest.mark.parametrize(
    ("value", "threshold", "greater", "passed"),
    [(0.8, 0.7, True, True), (0.7, 0.7, True, True), (0.69, 0.7, True, False),
     (0.2, 0.3, False, True), (0.3, 0.3, False, True), (0.31, 0.3, False, False)],
)  # fmt: skip
def test_threshold_both_directions(value: float, threshold: float, greater: bool, passed: bool) -> None:
    gate = Gate("m", threshold=threshold, greater_is_better=greater)
    decision = decide_promotion(scores("candidate", m=value), [], [gate])
    assert kinds(decision) == [("threshold", passed)]
    assert decision.passed is passed
    assert decision.checks[0].observed == value and decision.checks[0].required == threshold


@pytest.mark.parametrize(
    ("cand", "base", "required", "greater", "passed"),
    [(0.8, 0.6, 0.2, True, True), (0.8, 0.6, 0.21, True, False), (0.6, 0.8, 0.0, True, False),
     (0.1, 0.3, 0.2, False, True), (0.1, 0.3, 0.25, False, False), (0.5, 0.5, 0.0, True, True)],
)  # fmt: skip
def test_min_absolute_change(cand: float, base: float, required: float, greater: bool, passed: bool) -> None:
    gate = Gate("m", min_absolute_change=required, greater_is_better=greater)
    decision = decide_promotion(scores("candidate", m=cand), [scores("base", m=base)], [gate])
    assert kinds(decision) == [("min_absolute_change", passed)]
    assert decision.checks[0].against == "base"
    assert decision.checks[0].observed == pytest.approx(cand - base if greater else base - cand)


@pytest.mark.parametrize(
    ("cand", "base", "required", "greater", "passed"),
    [(0.66, 0.6, 0.1, True, True), (0.65, 0.6, 0.1, True, False), (0.09, 0.1, 0.1, False, True),
     (0.095, 0.1, 0.1, False, False), (-0.4, -0.5, 0.2, True, True)],
)  # fmt: skip
def test_min_relative_change(cand: float, base: float, required: float, greater: bool, passed: bool) -> None:
    gate = Gate("m", min_relative_change=required, greater_is_better=greater)
    decision = decide_promotion(scores("candidate", m=cand), [scores("base", m=base)], [gate])
    assert kinds(decision) == [("min_relative_change", passed)]


@pytest.mark.parametrize(
    ("cand", "expected", "passed"), [(0.1, math.inf, True), (0.0, 0.0, False), (-0.1, -math.inf, False)]
)
def test_relative_change_from_a_zero_baseline(cand: float, expected: float, passed: bool) -> None:
    gate = Gate("m", min_relative_change=0.05)
    decision = decide_promotion(scores("candidate", m=cand), [scores("base", m=0.0)], [gate])
    assert decision.checks[0].observed == expected and decision.passed is passed


def test_each_gate_compares_with_the_baseline_it_names() -> None:
    few_shot = scores("few-shot", f1=0.75)
    on_base = Gate("f1", min_absolute_change=0.1)
    on_few_shot = Gate("f1", min_absolute_change=0.1, baseline="few_shot")
    decision = decide_promotion(CAND, [BASE, few_shot], [on_base, on_few_shot])
    assert [(c.against, c.passed) for c in decision.checks] == [("base", True), ("few-shot", False)]
    assert not decision.passed
    assert decision.reasons == ("f1 vs few-shot: absolute improvement 0.05 < required 0.1",)


def test_a_gate_on_the_base_ignores_the_few_shot_baseline() -> None:
    decision = decide_promotion(
        CAND, [BASE, scores("few-shot", f1=0.79)], [Gate("f1", min_absolute_change=0.1)]
    )
    assert [(c.against, c.passed) for c in decision.checks] == [("base", True)]
    assert decision.passed


def test_a_gate_on_a_baseline_that_was_not_evaluated_fails() -> None:
    gate = Gate("f1", min_absolute_change=0.1, baseline="few_shot", require_significant=True)
    decision = decide_promotion(CAND, [BASE], [gate])
    assert not decision.passed
    assert decision.reasons == ("f1 vs few-shot: that baseline was not evaluated",)


def test_an_absolute_bar_needs_no_baseline() -> None:
    decision = decide_promotion(CAND, [], [Gate("f1", threshold=0.8)])
    assert kinds(decision) == [("threshold", True)]
    assert not decide_promotion(CAND, [], [Gate("f1", threshold=0.9)]).passed


@pytest.mark.parametrize(
    ("chosen", "best", "max_rise", "passed", "observed"),
    [
        (1.0, 1.0, 0.1, True, 0.0),
        (1.1, 1.0, 0.1, True, 0.1),  # exactly the allowed rise passes
        (1.11, 1.0, 0.1, False, 0.11),
        (0.9, 1.0, 0.0, True, 0.0),  # below the best (a checkpoint between logged ones): no rise
        (1.5, 1.0, 0.0, False, 0.5),
        (0.0, 0.0, 0.0, True, 0.0),
        (0.1, 0.0, 10.0, False, math.inf),
    ],
)
def test_overfitting_check(
    chosen: float, best: float, max_rise: float, passed: bool, observed: float
) -> None:
    check = overfitting_check(
        chosen="final, epoch 5 (step 20)", chosen_loss=chosen, best="epoch 2 (step 8)", best_loss=best,
        max_rise=max_rise,
    )  # fmt: skip
    assert (check.kind, check.passed, check.required) == ("overfitting", passed, max_rise)
    assert check.observed == pytest.approx(observed)
    if not passed:
        assert "evaluation.checkpoints: best" in check.message and "n_epochs" in check.message
        assert "epoch 2 (step 8)" in check.message and "final, epoch 5" in check.message


@pytest.mark.parametrize(("chosen", "best"), [(None, 1.0), (1.0, None), (math.nan, 1.0)])
def test_overfitting_check_without_a_validation_loss_fails(chosen: float | None, best: float | None) -> None:
    check = overfitting_check(chosen="final", chosen_loss=chosen, best="?", best_loss=best, max_rise=0.1)
    assert not check.passed and "validation split" in check.message


def test_extra_checks_join_the_decision() -> None:
    passed = decide_promotion(CAND, [BASE], [Gate("f1", min_absolute_change=0.1)])
    bad = overfitting_check(chosen="final", chosen_loss=2.0, best="epoch 1", best_loss=1.0, max_rise=0.1)
    good = overfitting_check(chosen="final", chosen_loss=1.0, best="epoch 1", best_loss=1.0, max_rise=0.1)
    assert passed.with_checks([good]).passed
    failed = passed.with_checks([bad])
    assert not failed.passed
    assert failed.reasons == (bad.message,)
    assert failed.summary().startswith("gate failed: overfitting:")


@pytest.mark.parametrize(
    ("interval", "greater", "passed"),
    [(ci(0.01, 0.3), True, True), (ci(-0.01, 0.3), True, False), (ci(0.0, 0.3), True, False),
     (ci(-0.3, -0.01), False, True), (ci(-0.3, 0.01), False, False), (None, True, False)],
)  # fmt: skip
def test_require_significant(interval: Interval | None, greater: bool, passed: bool) -> None:
    gate = Gate("f1", require_significant=True, greater_is_better=greater)
    base = scores("base", {"f1": interval}, f1=0.6)
    decision = decide_promotion(CAND, [base], [gate])
    assert kinds(decision) == [("significance", passed)]


def test_significance_alongside_a_change_gate() -> None:
    gate = Gate("f1", min_absolute_change=0.1, require_significant=True)
    base = scores("base", {"f1": ci(-0.05, 0.45)}, f1=0.6)
    decision = decide_promotion(CAND, [base], [gate])
    assert kinds(decision) == [("min_absolute_change", True), ("significance", False)]
    assert "does not exclude" in decision.reasons[0]


@pytest.mark.parametrize(
    ("cand", "champ", "greater", "passed"),
    [(0.8, 0.7, True, True), (0.8, 0.8, True, True), (0.79, 0.8, True, False),
     (0.2, 0.3, False, True), (0.31, 0.3, False, False)],
)  # fmt: skip
def test_do_not_lose_to_the_champion(cand: float, champ: float, greater: bool, passed: bool) -> None:
    gate = Gate("m", greater_is_better=greater)
    decision = decide_promotion(scores("candidate", m=cand), [], [gate], champion=scores("champion", m=champ))
    assert kinds(decision) == [("champion", passed)]


def test_champion_check_can_be_switched_off() -> None:
    gate = Gate("f1")
    champion = scores("champion", f1=0.99)
    assert decide_promotion(CAND, [], [gate], champion=champion, beat_champion=False).checks == ()


@pytest.mark.parametrize(
    ("interval", "passed"), [(ci(-0.2, 0.05), True), (ci(-0.2, -0.01), False), (None, False)]
)
def test_champion_with_significance_only_a_significant_loss_fails(
    interval: Interval | None, passed: bool
) -> None:
    gate = Gate("f1", require_significant=True)
    champion = scores("champion", {"f1": interval}, f1=0.85)
    decision = decide_promotion(CAND, [], [gate], champion=champion)
    assert [c for c in kinds(decision) if c[0] == "champion"] == [("champion", passed)]


@pytest.mark.parametrize(
    ("observed", "ceiling", "passed"), [(100.0, 100.0, True), (99.0, 100.0, True), (101.0, 100.0, False),
                                        (None, 100.0, False), (math.nan, 100.0, False)],
)  # fmt: skip
def test_latency_ceiling(observed: float | None, ceiling: float, passed: bool) -> None:
    cand = ModelScores("candidate", {}, latency_p95_ms=observed)
    decision = decide_promotion(cand, [], [], max_latency_p95_ms=ceiling)
    assert kinds(decision) == [("latency", passed)]


@pytest.mark.parametrize(("observed", "passed"), [(0.5, True), (2.0, False), (None, False)])
def test_cost_ceiling(observed: float | None, passed: bool) -> None:
    cand = ModelScores("candidate", {}, cost_per_1k_usd=observed)
    decision = decide_promotion(cand, [], [], max_cost_per_1k_requests_usd=1.0)
    assert kinds(decision) == [("cost", passed)]


@pytest.mark.parametrize("missing", [None, math.nan])
def test_a_missing_candidate_score_fails_every_kind_of_gate(missing: float | None) -> None:
    cand = scores("candidate", f1=missing)
    gates = (
        Gate("f1", threshold=0.1),
        Gate("f1", min_absolute_change=0.0),
        Gate("f1", min_relative_change=0.0),
        Gate("f1", require_significant=True),
        Gate("f1"),
    )
    for gate in gates:
        decision = decide_promotion(cand, [BASE], [gate], champion=scores("champion", f1=0.1))
        assert not decision.passed, gate
        assert any("missing" in r or "no confidence" in r for r in decision.reasons), gate


def test_a_gate_on_a_metric_nobody_computed_fails() -> None:
    decision = decide_promotion(CAND, [BASE], [Gate("groundedness", greater_is_better=True)])
    assert not decision.passed
    assert decision.reasons == ("groundedness: candidate score is missing",)


def test_a_missing_baseline_score_fails_the_change_gate() -> None:
    decision = decide_promotion(CAND, [scores("base")], [Gate("f1", min_absolute_change=0.0)])
    assert not decision.passed and decision.reasons == ("f1 vs base: base score is missing",)


def test_unanswered_rows_fail_the_decision() -> None:
    cand = ModelScores("candidate", {"f1": 0.9}, failed_rows=3)
    decision = decide_promotion(cand, [], [Gate("f1", threshold=0.5)])
    assert not decision.passed and decision.reasons == ("candidate could not answer 3 rows",)


def test_spec_gate_config_is_accepted_and_decision_serialises() -> None:
    gate = GateConfig(metric="f1", threshold=0.7, min_absolute_change=0.1)
    decision = decide_promotion(CAND, [BASE], [gate], max_latency_p95_ms=50)
    data = decision.to_dict()
    assert data["passed"] is False and data["candidate"] == "candidate"
    assert [c["kind"] for c in data["checks"]] == ["threshold", "min_absolute_change", "latency"]
    assert decision.failures[0].kind == "latency"
    assert decision.summary().startswith("gate failed: candidate p95 latency 100 ms > ceiling 50 ms")


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(cand=finite, base=finite, required=st.floats(min_value=0, max_value=1e3), greater=st.booleans())
def test_absolute_gate_matches_its_definition(
    cand: float, base: float, required: float, greater: bool
) -> None:
    gate = Gate("m", min_absolute_change=required, greater_is_better=greater)
    decision = decide_promotion(scores("candidate", m=cand), [scores("base", m=base)], [gate])
    gain = cand - base if greater else base - cand
    if abs(gain - required) > 1e-6 * max(1.0, required):  # away from the rounding tolerance
        assert decision.passed is (gain >= required)


@given(cand=finite, base=finite, greater=st.booleans())
def test_mirrored_metrics_decide_alike(cand: float, base: float, greater: bool) -> None:
    """Negating every score and flipping the direction must not change any verdict."""
    gate = Gate("m", threshold=0.0, min_absolute_change=0.0, greater_is_better=greater)
    flipped = Gate("m", threshold=0.0, min_absolute_change=0.0, greater_is_better=not greater)
    one = decide_promotion(scores("candidate", m=cand), [scores("base", m=base)], [gate])
    two = decide_promotion(scores("candidate", m=-cand), [scores("base", m=-base)], [flipped])
    assert [c.passed for c in one.checks] == [c.passed for c in two.checks]


def test_a_partially_scored_metric_is_no_score() -> None:
    """An evaluator that failed on some rows must not let a mean over the rest through."""
    cand = ModelScores("candidate", {"f1": 0.9}, unscored={"f1": 3})
    base = ModelScores("base", {"f1": 0.1}, unscored={"f1": 1})
    decision = decide_promotion(cand, [base], [Gate("f1", threshold=0.5, min_absolute_change=0.1)])
    assert not decision.passed
    assert decision.reasons == (
        "f1: 3 rows of candidate could not be scored",
        "f1: 1 rows of base could not be scored",
        "f1: candidate score is missing",
        "f1 vs base: candidate score is missing",
    )
    assert cand.mean("f1") is None and cand.mean("rouge") is None
