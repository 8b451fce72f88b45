"""The drift verdict: every signal against its threshold, insufficient traffic, what is not measured."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError

from tuneops.spec import MonitoringConfig
from tuneops.tasks.drift.measure import (
    QualityBaseline,
    Reference,
    WindowSample,
    measure_window,
    texts_to_embed,
)
from tuneops.tasks.drift.rules import SIGNALS, Measurements, QualityScore, decide_drift, signal_names
from tuneops.tasks.drift.stats import AucResult, OodResult, RateTest

CONFIG = MonitoringConfig(min_requests=100)


def _quiet(**changes: object) -> Measurements:
    base = Measurements(
        requests=1000,
        embedding=AucResult(auc=0.51, low=0.48, high=0.54, n_reference=1000, n_current=1000),
        prompt_length_psi=0.02,
        ood=OodResult(share=0.012, expected=0.01, distance_threshold=0.4, n_current=1000),
        format_failures=RateTest(observed=0.05, baseline=0.04, n=1000, p_value=0.1),
        refusals=RateTest(observed=0.01, baseline=0.01, n=1000, p_value=0.5),
        errors=RateTest(observed=0.0, baseline=0.0, n=1000, p_value=1.0),
        latency_p95_ms=120.0,
        latency_baseline_ms=100.0,
    )
    return dataclasses.replace(base, **changes)


def test_quiet_window_is_no_drift_with_every_signal_listed() -> None:
    verdict = decide_drift("claims", "3", _quiet(), CONFIG)
    assert verdict.status == "no_drift" and not verdict.drifted
    assert [s.name for s in verdict.signals] == list(SIGNALS)
    assert verdict.summary() == "no drift in 1000 requests"
    assert verdict.reasons == []


def test_too_little_traffic_is_its_own_verdict() -> None:
    verdict = decide_drift("claims", "3", _quiet(requests=99), CONFIG)
    assert verdict.status == "insufficient_traffic" and not verdict.drifted
    assert verdict.summary() == "insufficient traffic: 99 requests in the window, 100 needed"
    assert verdict.signals == ()


def test_embedding_drift_needs_the_lower_bound_above_the_threshold() -> None:
    high_but_unsure = AucResult(auc=0.6, low=0.54, high=0.66, n_reference=50, n_current=50)
    assert not decide_drift("m", None, _quiet(embedding=high_but_unsure), CONFIG).drifted
    sure = AucResult(auc=0.66, low=0.63, high=0.69, n_reference=1000, n_current=1000)
    verdict = decide_drift("m", None, _quiet(embedding=sure), CONFIG)
    assert verdict.drifted
    (signal,) = verdict.drifted_signals
    assert signal.name == "embedding_auc" and signal.effect == pytest.approx(0.16)
    assert signal.threshold == CONFIG.embedding_auc_threshold
    assert verdict.summary().startswith("embedding AUC 0.660 [0.630, 0.690]")


def test_psi_above_threshold_drifts_and_equal_does_not() -> None:
    assert decide_drift("m", None, _quiet(prompt_length_psi=0.25), CONFIG).status == "no_drift"
    verdict = decide_drift("m", None, _quiet(prompt_length_psi=0.8), CONFIG)
    assert [s.name for s in verdict.drifted_signals] == ["prompt_length_psi"]
    assert "prompt-length PSI 0.800 > 0.25" in verdict.summary()


def test_ood_share_above_threshold_drifts() -> None:
    far = OodResult(share=0.2, expected=0.01, distance_threshold=0.4, n_current=1000)
    verdict = decide_drift("m", None, _quiet(ood=far), CONFIG)
    assert [s.name for s in verdict.drifted_signals] == ["ood_share"]
    assert verdict.drifted_signals[0].effect == pytest.approx(0.19)


@pytest.mark.parametrize("field", ["format_failures", "refusals", "errors"])
def test_a_rate_must_rise_past_the_margin_and_significantly(field: str) -> None:
    small = RateTest(observed=0.08, baseline=0.04, n=1000, p_value=1e-6)  # within +5 points
    unsure = RateTest(observed=0.2, baseline=0.04, n=10, p_value=0.05)  # big but not significant
    worse = RateTest(observed=0.2, baseline=0.04, n=1000, p_value=1e-9)
    assert not decide_drift("m", None, _quiet(**{field: small}), CONFIG).drifted
    assert not decide_drift("m", None, _quiet(**{field: unsure}), CONFIG).drifted
    verdict = decide_drift("m", None, _quiet(**{field: worse}), CONFIG)
    assert verdict.drifted and verdict.drifted_signals[0].threshold == pytest.approx(0.09)


def test_latency_is_judged_as_a_ratio_to_the_evaluated_p95() -> None:
    assert not decide_drift("m", None, _quiet(latency_p95_ms=200.0), CONFIG).drifted
    verdict = decide_drift("m", None, _quiet(latency_p95_ms=250.0), CONFIG)
    assert verdict.drifted_signals[0].effect == pytest.approx(2.5)


def test_feedback_needs_a_configured_floor_and_enough_scores() -> None:
    low = _quiet(feedback_mean=0.3, feedback_count=100)
    assert not decide_drift("m", None, low, CONFIG).drifted  # no floor configured
    with_floor = CONFIG.model_copy(update={"min_feedback_mean": 0.6})
    assert decide_drift("m", None, low, with_floor).drifted
    thin = _quiet(feedback_mean=0.3, feedback_count=5)
    signal = next(s for s in decide_drift("m", None, thin, with_floor).signals if s.name == "feedback_mean")
    assert not signal.measured and "5 feedback scores" in signal.message


def test_low_confidence_share_only_where_logprobs_exist() -> None:
    none = decide_drift("m", None, _quiet(), CONFIG)
    signal = next(s for s in none.signals if s.name == "low_confidence_share")
    assert not signal.measured and "log-probabilities" in signal.message
    assert decide_drift("m", None, _quiet(low_confidence_share=0.5), CONFIG).drifted


def test_unmeasured_signals_say_why_and_never_drift() -> None:
    verdict = decide_drift(
        "m",
        None,
        _quiet(embedding=None, ood=None, missing={"embedding_auc": "texts not captured"}),
        CONFIG,
    )
    assert verdict.status == "no_drift"
    messages = {s.name: s.message for s in verdict.signals if not s.measured}
    assert messages["embedding_auc"] == "embedding_auc not measured: texts not captured"
    assert "ood_share" in messages


def test_several_signals_join_in_the_summary_and_dict() -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    verdict = decide_drift(
        "claims",
        "7",
        _quiet(prompt_length_psi=0.5, latency_p95_ms=500.0),
        CONFIG,
        window_start=start,
        window_end=end,
    )
    assert verdict.summary().count("; ") == 1
    data = verdict.to_dict()
    assert data["drifted"] is True and data["version"] == "7"
    assert data["window_start"] == "2026-01-01T00:00:00+00:00"
    assert len(data["signals"]) == len(SIGNALS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.status = "no_drift"  # type: ignore[misc]


def test_monitoring_config_refuses_an_ood_bar_below_the_expected_share() -> None:
    with pytest.raises(ValidationError, match="ood_share_threshold"):
        MonitoringConfig(ood_quantile=0.9, ood_share_threshold=0.05)
    with pytest.raises(ValidationError):
        MonitoringConfig(embedding_auc_threshold=0.5)


# --- measure_window: which rows each statistic sees


def _window(n: int, **changes: object) -> WindowSample:
    base = WindowSample(
        prompts=[f"prompt {i}" for i in range(n)],
        prompt_tokens=[10 + i % 5 for i in range(n)],
        status_codes=[200] * n,
        latencies_ms=[float(100 + i % 10) for i in range(n)],
    )
    return dataclasses.replace(base, **changes)


def test_measure_window_without_texts_marks_embedding_signals_missing() -> None:
    reference = Reference(embeddings=None, prompt_tokens=[10, 11, 12, 13, 14])
    m = measure_window(_window(300), reference, None, CONFIG)
    assert m.embedding is None and m.ood is None
    assert "capture_text" in m.missing["embedding_auc"]
    assert m.prompt_length_psi == pytest.approx(0.0, abs=0.01)
    assert m.format_failures is None and m.errors is None  # no baseline from the evaluation
    assert m.latency_p95_ms == pytest.approx(109.0)


def test_measure_window_rates_against_the_evaluation_baseline() -> None:
    n = 400
    window = _window(
        n,
        status_codes=[500 if i < 40 else 200 for i in range(n)],
        format_ok=[i % 4 != 0 for i in range(n)],  # 25% failures
        refusals=[None] * n,
        feedback=[0.5] * 10 + [None] * (n - 10),
    )
    baseline = QualityBaseline(format_compliance=0.95, refusal_rate=0.0, error_rate=0.0, latency_p95_ms=100.0)
    m = measure_window(window, Reference(None, [10, 11, 12, 13, 14], baseline), None, CONFIG)
    assert m.format_failures is not None and m.format_failures.observed == pytest.approx(0.25)
    assert m.format_failures.baseline == pytest.approx(0.05)
    assert m.refusals is None  # no known flags
    assert m.errors is not None and m.errors.observed == pytest.approx(0.1)
    assert m.feedback_mean == pytest.approx(0.5) and m.feedback_count == 10
    verdict = decide_drift("m", None, m, CONFIG)
    assert {s.name for s in verdict.drifted_signals} == {"format_failure_rate", "error_rate"}


def test_measure_window_embeds_against_a_sample_of_the_reference() -> None:
    rng = np.random.default_rng(0)
    reference = Reference(embeddings=rng.normal(size=(3000, 8)).astype(np.float32), prompt_tokens=[10] * 10)
    current = rng.normal(size=(300, 8)).astype(np.float32)
    config = CONFIG.model_copy(update={"embedding_sample": 500})
    m = measure_window(_window(300), reference, current, config)
    assert m.embedding is not None and m.embedding.n_reference == 500
    assert m.ood is not None and m.ood.n_current == 300


def test_texts_to_embed_samples_captured_prompts_reproducibly() -> None:
    config = CONFIG.model_copy(update={"embedding_sample": 50})
    window = _window(200, prompts=[None if i % 2 else f"p{i}" for i in range(200)])
    picked = texts_to_embed(window, config, seed=3)
    assert len(picked) == 50 and all(p and p.startswith("p") for p in picked)
    assert picked == texts_to_embed(window, config, seed=3)


# --- sampled quality scores -------------------------------------------------------------------

QUALITY_CONFIG = MonitoringConfig(min_requests=100, quality_sample=0.1, quality_min_rows=30)


def _score(mean: float, low: float, high: float, *, rows: int = 40, **bars: object) -> QualityScore:
    fields: dict[str, object] = {"threshold": 0.9, "greater_is_better": True, "evaluated": 0.96, **bars}
    return QualityScore("format", mean, low, high, rows, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("score", "drifted"),
    [
        (_score(0.6, 0.5, 0.7), True),  # whole interval below the gate's bar
        (_score(0.8, 0.7, 0.9), False),  # upper bound on the bar: not surely below
        (_score(0.85, 0.75, 0.95), False),  # straddles the bar: a dip that may be chance
        (_score(0.97, 0.93, 1.0), False),  # above the bar
        (_score(0.05, 0.01, 0.1, threshold=0.0, greater_is_better=False), True),  # lower is better, above
        (_score(0.03, 0.0, 0.08, threshold=0.0, greater_is_better=False), False),  # lower bound on the bar
        (_score(0.0, 0.0, 0.0, threshold=0.0, greater_is_better=False), False),  # at the ceiling
        (_score(0.2, 0.1, 0.3, threshold=None), False),  # no gate on the metric: shown, not judged
    ],
)
def test_a_sampled_score_drifts_only_when_its_interval_is_past_the_gate(
    score: QualityScore, drifted: bool
) -> None:
    verdict = decide_drift("m", None, _quiet(quality=(score,)), QUALITY_CONFIG)
    (signal,) = [s for s in verdict.signals if s.name == "quality:format"]
    assert signal.measured and signal.drifted is drifted and verdict.drifted is drifted
    assert signal.observed == score.mean and signal.baseline == score.evaluated
    assert signal.threshold == score.threshold
    if score.threshold is None:
        assert signal.effect is None and "no gate threshold" in signal.message
    else:
        assert signal.effect == pytest.approx(score.mean - score.threshold)
    if drifted:
        assert verdict.summary().startswith(f"format {score.mean:.3g} [{score.low:.3g}, {score.high:.3g}]")


def test_a_format_drop_names_its_signal_and_effect() -> None:
    verdict = decide_drift("m", "4", _quiet(quality=(_score(0.6, 0.5, 0.7),)), QUALITY_CONFIG)
    assert list(signal_names(verdict)) == ["quality:format"]
    (signal,) = verdict.drifted_signals
    assert signal.effect == pytest.approx(-0.3)
    assert signal.message == (
        "format 0.6 [0.5, 0.7] over 40 sampled answers, 0.96 at evaluation (below the gate's 0.9)"
    )


@pytest.mark.parametrize(("rows", "judged"), [(29, False), (30, True), (0, False)])
def test_too_few_scored_rows_leave_a_score_unjudged_and_say_so(rows: int, judged: bool) -> None:
    score = _score(0.1, 0.0, 0.2, rows=rows)  # far below the bar: only the row count holds it back
    verdict = decide_drift("m", None, _quiet(quality=(score,)), QUALITY_CONFIG)
    (signal,) = [s for s in verdict.signals if s.name == "quality:format"]
    assert signal.measured is judged and verdict.drifted is judged
    if not judged:
        assert signal.message == f"quality:format not judged: {rows} sampled rows scored, 30 needed"
        assert verdict.summary() == f"no drift in 1000 requests ({signal.message})"


def test_a_scorer_that_could_not_run_is_listed_with_its_reason_never_as_a_drop() -> None:
    reason = "judge endpoint unreachable (http://127.0.0.1:9/v1): [Errno 111] Connection refused"
    score = _score(float("nan"), float("nan"), float("nan"), rows=0, unjudged=reason)
    verdict = decide_drift("m", None, _quiet(quality=(score,)), QUALITY_CONFIG)
    (signal,) = [s for s in verdict.signals if s.name == "quality:format"]
    assert not signal.measured and not signal.drifted and verdict.status == "no_drift"
    assert signal.message == f"quality:format not judged: {reason}"
    assert verdict.summary() == f"no drift in 1000 requests ({signal.message})"


def test_a_thin_sample_is_listed_with_its_reason_never_as_plain_no_drift() -> None:
    reason = "12 sampled answers with captured text, 30 needed"
    verdict = decide_drift("m", None, _quiet(missing={"quality": reason}), QUALITY_CONFIG)
    (signal,) = [s for s in verdict.signals if s.name.startswith("quality:")]
    assert signal.name == "quality:sample" and not signal.measured and not signal.drifted
    assert verdict.summary() == f"no drift in 1000 requests (quality:sample not judged: {reason})"


def test_nothing_to_score_or_sampling_off_adds_no_quality_signal() -> None:
    assert decide_drift("m", None, _quiet(), QUALITY_CONFIG).signals[-1].name == SIGNALS[-1]
    off = QUALITY_CONFIG.model_copy(update={"quality_sample": 0.0})
    dropped = _quiet(quality=(_score(0.1, 0.0, 0.2),), missing={"quality": "thin"})
    verdict = decide_drift("m", None, dropped, off)
    assert [s.name for s in verdict.signals] == list(SIGNALS) and verdict.status == "no_drift"


def test_each_metric_is_its_own_signal() -> None:
    pii = QualityScore("pii_leak", 0.1, 0.05, 0.15, 50, threshold=0.0, greater_is_better=False)
    fine = _score(0.95, 0.9, 1.0)
    verdict = decide_drift("m", None, _quiet(quality=(fine, pii)), QUALITY_CONFIG)
    assert list(signal_names(verdict)) == ["quality:pii_leak"]
    assert [s.name for s in verdict.signals][-2:] == ["quality:format", "quality:pii_leak"]


def test_quality_settings_are_bounded() -> None:
    for bad in ({"quality_sample": 1.5}, {"quality_sample": -0.1}, {"quality_max_rows": 0}):
        with pytest.raises(ValidationError):
            MonitoringConfig(**bad)  # type: ignore[arg-type]
    assert MonitoringConfig().quality_sample == 0.1
