"""Sampled quality scores, the adapter half: served answers scored by the evaluation's own scorers."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tuneops.requestlog import LoggedRequest
from tuneops.settings import TuneopsSettings
from tuneops.spec import MonitoringConfig, Spec
from tuneops.tasks.drift.rules import Measurements, decide_drift
from tuneops.tasks.drift.scoring import measure_quality

GOOD = "CLAIM_TYPE=auto; PRIORITY=high; NEXT=file_police_report."
BAD = "Sorry to hear that, call us on +44 20 7946 0958."  # off-format, and a phone number of its own


def _spec(**evaluation: Any) -> Spec:
    return Spec.model_validate(
        {
            "model": {"name": "m", "base_model": "b"},
            "data": {"train": "t.jsonl"},
            "monitoring": {"quality_sample": 1.0, "quality_min_rows": 10, "min_requests": 10},
            "evaluation": {"format": {"regex": r"^CLAIM_TYPE=\w+; "}, **evaluation},
        }
    )


def _rows(answers: Sequence[str | None], *, status: int = 200, captured: bool = True) -> list[LoggedRequest]:
    return [
        LoggedRequest(
            request_id=f"req-{i}",
            model="m",
            at=datetime.now(UTC),
            status_code=status,
            latency_ms=10.0,
            prompt_text=json.dumps([{"role": "user", "content": f"my car was stolen ({i})"}])
            if captured
            else None,
            response_text=answer,
        )
        for i, answer in enumerate(answers)
    ]


def _settings(tmp_path: Path) -> TuneopsSettings:
    return TuneopsSettings(project_dir=tmp_path)


def test_format_refusal_and_pii_are_scored_with_the_evaluations_scorers(tmp_path: Path) -> None:
    spec = _spec(metrics=["format", "refusal"], gates=[{"metric": "format", "threshold": 0.9}], safety={})
    sample = measure_quality(spec, _settings(tmp_path), _rows([GOOD] * 20 + [BAD] * 20), {"format": 0.97})
    assert sample.sampled == 40 and sample.missing is None
    scores = {s.metric: s for s in sample.scores}
    assert list(scores) == ["format", "refusal", "pii_leak"]
    assert scores["format"].mean == 0.5 and scores["format"].rows == 40
    assert (scores["format"].threshold, scores["format"].evaluated) == (0.9, 0.97)
    assert scores["refusal"].mean == 0.0  # "Sorry ..., call us" is not a refusal
    assert scores["pii_leak"].mean == 0.5 and scores["pii_leak"].threshold == 0.0
    verdict = decide_drift("m", "1", Measurements(requests=40, quality=sample.scores), spec.monitoring)
    assert {s.name for s in verdict.drifted_signals} == {"quality:format", "quality:pii_leak"}


def test_only_answered_captured_requests_are_sampled_and_a_thin_sample_says_so(tmp_path: Path) -> None:
    spec, settings = _spec(), _settings(tmp_path)
    errors = _rows([None] * 30, status=502)
    thin = measure_quality(spec, settings, _rows([GOOD] * 5) + errors, {})
    assert thin.scores == () and thin.missing == "5 sampled answers with captured text, 10 needed"
    dark = measure_quality(spec, settings, _rows([GOOD] * 30, captured=False), {})
    assert dark.missing == "answer texts are not captured (serving.capture_text off)"
    assert (
        measure_quality(_spec(format={}), settings, _rows([GOOD] * 30), {}).missing is None
    )  # nothing to score
    off = spec.model_copy(update={"monitoring": MonitoringConfig(quality_sample=0.0)})
    assert measure_quality(off, settings, _rows([BAD] * 30), {}).scores == ()


@pytest.mark.slow
def test_the_llm_judge_scores_served_answers_through_the_evaluations_endpoint(tmp_path: Path) -> None:
    """The judge is the chat stub (as in the evaluation's tests): 5 for the claims format, else 1."""
    from tuneops.testing.chat_stub import StubConfig, running_chat_stub

    def judge(model: str, messages: list[dict[str, object]]) -> str:
        score = 5 if GOOD in json.dumps(messages) else 1
        return json.dumps({"reason": "checked", "score": score, "status": "completed"})

    with running_chat_stub(StubConfig(answer=judge)) as stub:
        spec = _spec(
            metrics=["f1"],
            judge={"base_url": stub.base_url, "model": "judge-1", "evaluators": ["relevance"]},
            gates=[{"metric": "relevance", "threshold": 3.0}],
        )
        good = measure_quality(spec, _settings(tmp_path), _rows([GOOD] * 12), {"relevance": 4.8})
        bad = measure_quality(spec, _settings(tmp_path), _rows([GOOD] * 2 + [BAD] * 10), {"relevance": 4.8})
        assert stub.stats.models["judge-1"] == 24
    (fine,) = good.scores
    assert (fine.metric, fine.mean, fine.rows, fine.threshold, fine.evaluated) == (
        "relevance",
        5.0,
        12,
        3.0,
        4.8,
    )
    (poor,) = bad.scores
    assert math.isclose(poor.mean, (2 * 5 + 10 * 1) / 12)
    verdicts = [
        decide_drift("m", "1", Measurements(requests=12, quality=s.scores), spec.monitoring)
        for s in (good, bad)
    ]
    assert [v.status for v in verdicts] == ["no_drift", "drifted"]
    assert [s.name for s in verdicts[1].drifted_signals] == ["quality:relevance"]


def _judged_spec(base_url: str) -> Spec:
    return _spec(
        metrics=["format", "refusal"],
        judge={"base_url": base_url, "model": "judge-1", "evaluators": ["relevance", "fluency"]},
        gates=[{"metric": "format", "threshold": 0.9}, {"metric": "relevance", "threshold": 3.0}],
        safety={},
    )


def _assert_judge_unjudged_rest_scored(spec: Spec, sample: Any, base_url: str) -> None:
    scores = {s.metric: s for s in sample.scores}
    assert list(scores) == ["format", "refusal", "relevance", "fluency", "pii_leak"]
    assert (scores["format"].mean, scores["format"].rows) == (0.5, 40)  # reference-free scorers still ran
    assert (scores["pii_leak"].mean, scores["pii_leak"].rows) == (0.5, 40)
    for metric in ("relevance", "fluency"):
        assert scores[metric].rows == 0
        assert scores[metric].unjudged is not None
        assert scores[metric].unjudged.startswith(f"judge endpoint unreachable ({base_url}): ")
    assert any(f"judge endpoint unreachable ({base_url})" in note for note in sample.notes)
    verdict = decide_drift("m", "1", Measurements(requests=40, quality=sample.scores), spec.monitoring)
    signals = {s.name: s for s in verdict.signals}
    for metric in ("relevance", "fluency"):
        signal = signals[f"quality:{metric}"]
        assert not signal.measured and not signal.drifted
        assert signal.message.startswith(
            f"quality:{metric} not judged: judge endpoint unreachable ({base_url})"
        )
    assert {s.name for s in verdict.drifted_signals} == {"quality:format", "quality:pii_leak"}


def test_a_judge_on_a_closed_port_is_not_judged_and_the_other_scorers_still_run(tmp_path: Path) -> None:
    from tuneops.testing.dead_endpoint import closed_endpoint

    url = closed_endpoint()
    spec = _judged_spec(url)
    sample = measure_quality(spec, _settings(tmp_path), _rows([GOOD] * 20 + [BAD] * 20), {})
    _assert_judge_unjudged_rest_scored(spec, sample, url)


def test_a_judge_that_never_answers_is_probed_once_and_not_judged(tmp_path: Path) -> None:
    """A server that accepts and never replies: one probe connection, no row is sent to it."""
    from tuneops.testing.dead_endpoint import silent_endpoint

    with silent_endpoint() as dead:
        spec = _judged_spec(dead.base_url)
        sample = measure_quality(spec, _settings(tmp_path), _rows([GOOD] * 20 + [BAD] * 20), {})
        assert dead.connections == 1
    _assert_judge_unjudged_rest_scored(spec, sample, dead.base_url)
    assert "no answer within" in (sample.scores[2].unjudged or "")


@pytest.mark.slow
def test_a_judge_that_answers_without_a_score_is_not_judged_rather_than_a_drop(tmp_path: Path) -> None:
    from tuneops.testing.chat_stub import StubConfig, running_chat_stub

    with running_chat_stub(StubConfig(answer=lambda model, messages: "I cannot rate this.")) as stub:
        spec = _spec(
            metrics=["f1"],
            judge={"base_url": stub.base_url, "model": "judge-1", "evaluators": ["relevance"]},
            gates=[{"metric": "relevance", "threshold": 3.0}],
        )
        sample = measure_quality(spec, _settings(tmp_path), _rows([GOOD] * 12), {"relevance": 4.8})
        assert stub.stats.models["judge-1"] == 12
    (relevance,) = sample.scores
    assert relevance.rows == 0 and relevance.unjudged == "the judge returned no score for any sampled answer"
    verdict = decide_drift("m", "1", Measurements(requests=12, quality=sample.scores), spec.monitoring)
    assert verdict.status == "no_drift"
    assert "quality:relevance not judged: the judge returned no score" in verdict.summary()
