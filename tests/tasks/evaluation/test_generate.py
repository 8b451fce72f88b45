"""generate_answers against the real HTTP chat stub through the official openai SDK."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneops.errors import ProviderAuthError, ProviderError
from tuneops.tasks.evaluation.generate import build_messages, cache_key, generate_answers, require_complete
from tuneops.tasks.evaluation.testset import read_test_split
from tuneops.tasks.evaluation.types import GenerationSettings, ModelUnderTest, TestExample
from tuneops.testing.chat_stub import ChatStub, StubConfig, running_chat_stub

from .conftest import QUESTIONS, STUB_KEY, SYSTEM, stub_answer

SETTINGS = GenerationSettings(max_tokens=32)


def model(stub: ChatStub, model_id: str = "ft-good", **kwargs: object) -> ModelUnderTest:
    return ModelUnderTest("candidate", stub.base_url, model_id, api_key=STUB_KEY, **kwargs)  # type: ignore[arg-type]


def test_every_row_is_answered_with_latency_tokens_and_cost(stub: ChatStub, test_file: Path) -> None:
    examples = read_test_split(test_file)
    priced = model(stub, price_per_1m_input_tokens=2.0, price_per_1m_output_tokens=4.0)
    result = generate_answers(priced, examples, dataset_digest="d1", settings=SETTINGS, show_progress=False)
    assert [a.response for a in result.answers] == list(QUESTIONS.values())
    first = result.answers[0]
    assert first.latency_ms is not None and first.latency_ms > 0
    assert first.prompt_tokens > 0 and first.completion_tokens == len(first.response.split())
    assert first.cost_usd == pytest.approx((first.prompt_tokens * 2 + first.completion_tokens * 4) / 1e6)
    assert not result.failed and not result.cached


def test_rate_limits_and_server_errors_are_retried_to_a_complete_result(test_file: Path) -> None:
    examples = read_test_split(test_file)
    config = StubConfig(
        answer=stub_answer, share_429=0.25, share_500=0.15, retry_after_s=0.01, max_faults_per_request=3
    )
    with running_chat_stub(config) as stub:
        result = generate_answers(model(stub), examples, dataset_digest="d", settings=SETTINGS,
                                  concurrency=4, show_progress=False)  # fmt: skip
        statuses = stub.stats.statuses
    assert statuses[429] > 0 and statuses[500] > 0
    assert statuses[200] == len(examples)
    assert require_complete(result) is result
    assert max(a.attempts for a in result.answers) > 1


def test_rows_that_keep_failing_are_a_clear_error_naming_how_many(test_file: Path) -> None:
    examples = read_test_split(test_file)
    doomed = {
        "What is the capital of Malta?",
        "What is the capital of Cyprus?",
        "What is the capital of Iceland?",
    }
    config = StubConfig(answer=stub_answer, always_fail=lambda m, msgs: msgs[-1]["content"] in doomed)
    with running_chat_stub(config) as stub:
        result = generate_answers(model(stub), examples, dataset_digest="d", settings=SETTINGS,
                                  max_attempts=2, show_progress=False)  # fmt: skip
    assert len(result.failed) == 3 and all(a.attempts == 2 for a in result.failed)
    expected = r"candidate \(ft-good at http://127.0.0.1:\d+/v1\): 3 of 30 rows could not be answered"
    with pytest.raises(ProviderError, match=expected):
        require_complete(result)


def test_a_refused_key_stops_at_once(stub: ChatStub, test_file: Path) -> None:
    wrong = ModelUnderTest("candidate", stub.base_url, "ft-good", api_key="sk-wrong")
    with pytest.raises(ProviderAuthError, match="refused the API key") as info:
        generate_answers(
            wrong, read_test_split(test_file), dataset_digest="d", settings=SETTINGS, show_progress=False
        )
    assert "sk-wrong" not in str(info.value)


def test_the_cache_means_a_rerun_sends_no_request(stub: ChatStub, test_file: Path, tmp_path: Path) -> None:
    examples = read_test_split(test_file)
    kwargs = {
        "dataset_digest": "d",
        "settings": SETTINGS,
        "cache_dir": tmp_path / "cache",
        "show_progress": False,
    }
    first = generate_answers(model(stub), examples, **kwargs)
    sent = stub.stats.requests
    again = generate_answers(model(stub), examples, **kwargs)
    assert stub.stats.requests == sent and again.cached and again.answers == first.answers
    assert first.wall_seconds > 0 and again.wall_seconds == 0, "cached answers cost no generation time"
    # Other generation settings or another dataset digest: generated anew.
    generate_answers(model(stub), examples, **{**kwargs, "settings": GenerationSettings(max_tokens=64)})
    assert stub.stats.requests == 2 * sent
    assert STUB_KEY not in "".join(p.read_text() for p in (tmp_path / "cache").iterdir())


def test_only_missing_rows_are_asked_again(test_file: Path, tmp_path: Path) -> None:
    examples = read_test_split(test_file)
    config = StubConfig(answer=stub_answer, always_fail=lambda m, msgs: "Malta" in msgs[-1]["content"])
    kwargs = {"dataset_digest": "d", "settings": SETTINGS, "cache_dir": tmp_path, "show_progress": False,
              "max_attempts": 1}  # fmt: skip
    with running_chat_stub(config) as stub:
        assert len(generate_answers(model(stub), examples, **kwargs).failed) == 1
        config.always_fail = None
        before = stub.stats.requests
        assert not generate_answers(model(stub), examples, **kwargs).failed
        assert stub.stats.requests == before + 1


def test_cache_key_ignores_the_api_key_but_not_the_prompt() -> None:
    one = ModelUnderTest("base", "http://x/v1", "m", api_key="a")
    assert cache_key(one, "d", SETTINGS) == cache_key(
        ModelUnderTest("base", "http://x/v1/", "m", api_key="b"), "d", SETTINGS
    )
    injected = ModelUnderTest("base", "http://x/v1", "m", system_prompt="s", system_prompt_mode="inject")
    assert cache_key(one, "d", SETTINGS) != cache_key(injected, "d", SETTINGS)
    assert "a" not in repr(one).split("api_key")[-1][:5]


EXAMPLE = TestExample(0, (("system", SYSTEM), ("user", "Q?")), "A.")


@pytest.mark.parametrize(
    ("mut", "expected"),
    [
        (ModelUnderTest("m", "u", "m"), [("system", SYSTEM), ("user", "Q?")]),
        (ModelUnderTest("m", "u", "m", system_prompt="Prod.", system_prompt_mode="inject"),
         [("system", "Prod."), ("user", "Q?")]),
        (ModelUnderTest("m", "u", "m", system_prompt_mode="strip"), [("user", "Q?")]),
        (ModelUnderTest("m", "u", "m", few_shot=((("user", "q1"), ("assistant", "a1")),)),
         [("system", SYSTEM), ("user", "q1"), ("assistant", "a1"), ("user", "Q?")]),
    ],
)  # fmt: skip
def test_build_messages(mut: ModelUnderTest, expected: list[tuple[str, str]]) -> None:
    assert build_messages(mut, EXAMPLE) == [{"role": r, "content": c} for r, c in expected]


def test_an_endpoint_that_is_down_fails_fast_naming_it(test_file: Path) -> None:
    with running_chat_stub() as stub:
        base_url = stub.base_url  # the port is closed once the stub has stopped
    down = ModelUnderTest("base", base_url, "m")
    result = generate_answers(down, read_test_split(test_file), dataset_digest="d", settings=SETTINGS,
                              max_attempts=2, concurrency=2, show_progress=False)  # fmt: skip
    assert len(result.failed) == 30
    assert sum(a.attempts for a in result.failed) <= 2 * 2 + 2  # rows in flight when the breaker opened
    with pytest.raises(ProviderError, match=r"30 of 30 rows could not be answered.*cannot connect"):
        require_complete(result)
