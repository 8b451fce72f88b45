"""score_answers runs azure-ai-evaluation's evaluate() fully offline."""

from __future__ import annotations

import ipaddress
import math
import socket
from pathlib import Path

import pytest

from tuneops.errors import SpecError
from tuneops.tasks.evaluation.formats import FormatComplianceEvaluator
from tuneops.tasks.evaluation.score import check_metrics, score_answers
from tuneops.tasks.evaluation.types import Answer, ModelAnswers, ModelUnderTest, TestExample

EXAMPLES = [
    TestExample(0, (("user", "What is the capital of Norway?"),), "The capital of Norway is Oslo."),
    TestExample(1, (("user", "Capital of Iceland?"),), "The capital of Iceland is Reykjavik."),
    TestExample(2, (("user", "Et la France ?"),), "La capitale de la France est Paris."),
]


def answers(label: str, texts: list[str]) -> ModelAnswers:
    model = ModelUnderTest(label, "http://127.0.0.1:9/v1", label)
    return ModelAnswers(model, tuple(Answer(i, t, 10.0) for i, t in enumerate(texts)))


GOOD = answers("candidate", [ex.reference for ex in EXAMPLES])
BAD = answers("base", ["I'm sorry, but I can't help with that.", "Reykjavik is cold.", "Je ne sais pas."])
ALL_OFFLINE = ["f1", "rouge", "bleu", "gleu", "meteor", "format", "refusal"]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Refuse every connection that does not go to a loopback address; record the attempts."""
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else None
        try:
            loopback = host is None or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            attempts.append(address)
            raise OSError(f"network disabled in this test: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(
        socket, "create_connection", lambda address, *a, **k: pytest.fail(f"connect {address}")
    )
    return attempts


@pytest.mark.slow
def test_offline_evaluators_score_every_row_with_no_network(nltk_dir: Path, no_network: list[object]) -> None:
    rows = score_answers(EXAMPLES, [GOOD, BAD], metrics=ALL_OFFLINE, nltk_dir=nltk_dir,
                         format_evaluator=FormatComplianceEvaluator(max_chars=34))  # fmt: skip
    assert no_network == []
    assert rows.skipped == {}
    assert set(rows.metrics) == set(ALL_OFFLINE)
    good, bad = rows.for_model("candidate"), rows.for_model("base")
    for metric in ("f1", "rouge", "bleu", "gleu", "meteor"):
        assert all(math.isfinite(v) for v in good[metric] + bad[metric]), metric
        assert min(good[metric]) > max(bad[metric]), metric
    assert good["f1"] == [1.0, 1.0, 1.0]
    assert good["format"] == [1.0, 0.0, 0.0]  # two references are longer than 34 characters
    assert rows.reasons["candidate"][1] == "36 characters > max 34"
    assert bad["refusal"] == [1.0, 0.0, 0.0] and good["refusal"] == [0.0, 0.0, 0.0]


def test_nltk_metrics_are_skipped_with_a_warning_when_data_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tuneops.tasks.evaluation import score

    monkeypatch.setattr(score, "ensure_nltk_data", lambda target: {"punkt", "punkt_tab", "perluniprops"})
    rows = score_answers(EXAMPLES, [GOOD], metrics=["f1", "bleu", "meteor"], nltk_dir=tmp_path)
    assert rows.metrics == ("f1",)
    assert rows.skipped == {"bleu": "NLTK data missing: wordnet", "meteor": "NLTK data missing: wordnet"}
    assert "skipping bleu" in caplog.text
    assert rows.for_model("candidate")["f1"] == [1.0, 1.0, 1.0]


def test_judge_metrics_without_a_judge_are_skipped(tmp_path: Path) -> None:
    rows = score_answers(EXAMPLES, [GOOD], metrics=["refusal", "relevance"], nltk_dir=tmp_path)
    assert rows.metrics == ("refusal",)
    assert rows.skipped == {"relevance": "no judge endpoint configured (evaluation.judge)"}


def test_an_unknown_metric_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="unknown metric 'bluer'"):
        score_answers(EXAMPLES, [GOOD], metrics=["bluer"], nltk_dir=tmp_path)


@pytest.mark.parametrize(
    ("metrics", "gated", "message"),
    [
        (["f1", "bluer"], [], r"evaluation.metrics\[1\]: unknown metric 'bluer'"),
        (["f1"], ["f1", "rouge"], r"evaluation.gates\[1\].metric: 'rouge' is not computed"),
    ],
)
def test_metrics_are_checked_before_anything_runs(metrics: list[str], gated: list[str], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        check_metrics(metrics, gated)
    check_metrics(["f1", "relevance"], ["relevance"])


@pytest.mark.slow
def test_llm_judges_run_against_any_openai_compatible_endpoint(tmp_path: Path) -> None:
    """The judge is the chat stub: it scores 5 when the judged answer is the reference, else 1."""
    import json

    from tuneops.tasks.evaluation.score import JudgeEndpoint
    from tuneops.testing.chat_stub import StubConfig, running_chat_stub

    def judge(model: str, messages: list[dict[str, object]]) -> str:
        prompt = json.dumps(messages)
        right = any(ex.reference in prompt for ex in EXAMPLES)
        return json.dumps({"reason": "checked", "score": 5 if right else 1, "status": "completed"})

    endpoint_metrics = ("relevance", "coherence", "fluency", "groundedness")
    with running_chat_stub(StubConfig(answer=judge, api_key="sk-judge")) as stub:
        endpoint = JudgeEndpoint(stub.base_url, "judge-1", "sk-judge", endpoint_metrics)
        rows = score_answers(EXAMPLES, [GOOD, BAD], metrics=["f1"], nltk_dir=tmp_path, judge=endpoint)
        assert stub.stats.models["judge-1"] == 2 * len(EXAMPLES) * len(endpoint_metrics)
    assert rows.metrics == ("f1", *endpoint_metrics)
    assert rows.for_model("candidate")["relevance"] == [5.0, 5.0, 5.0]
    assert rows.for_model("base")["relevance"] == [1.0, 1.0, 1.0]


def test_a_judge_on_a_closed_port_fails_scoring_at_once_naming_the_endpoint(tmp_path: Path) -> None:
    from tuneops.errors import TransientProviderError
    from tuneops.tasks.evaluation.score import JudgeEndpoint
    from tuneops.testing.dead_endpoint import closed_endpoint

    url = closed_endpoint()
    judge = JudgeEndpoint(url, "judge-1", "sk-judge", ("relevance",))
    with pytest.raises(TransientProviderError) as caught:
        score_answers(EXAMPLES, [GOOD], metrics=["f1"], nltk_dir=tmp_path, judge=judge)
    message = caught.value.one_line()
    assert message.startswith(f"judge endpoint unreachable ({url}): ") and "\n" not in message


def test_a_judge_that_never_answers_is_probed_once_and_fails_scoring(tmp_path: Path) -> None:
    from tuneops.errors import TransientProviderError
    from tuneops.tasks.evaluation.score import JudgeEndpoint
    from tuneops.testing.dead_endpoint import silent_endpoint

    with silent_endpoint() as dead:
        judge = JudgeEndpoint(dead.base_url, "judge-1", "sk-judge", ("relevance", "fluency"))
        with pytest.raises(TransientProviderError, match=r"^judge endpoint unreachable \(http://127"):
            score_answers(EXAMPLES, [GOOD, BAD], metrics=["f1"], nltk_dir=tmp_path, judge=judge)
        assert dead.connections == 1  # the probe only: no row was sent to the dead judge
