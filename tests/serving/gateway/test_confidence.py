"""Each answer's mean token logprob: asked for upstream, logged, hidden from clients that did not ask.

Over real HTTP with the official SDK, as ``test_app``: the chat stub returns token logprobs only
when a request carries ``logprobs: true``, so a row's ``mean_logprob`` shows the gateway asked.
The expected mean is computed from what the stub itself answers to a direct request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from tests.serving.gateway.conftest import ENDPOINT_MODELS, MODEL, Harness
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.serving.gateway.confidence import LogprobCapture, StreamLogprobs, mean_logprob
from tuneops.serving.local.launcher import ServiceProcess
from tuneops.spec import ServingConfig
from tuneops.testing.chat_stub import ChatStub
from tuneops.testing.reference.openapi import assert_matches

QUESTION = [{"role": "user", "content": "Is a cracked windscreen covered by my policy?"}]


def token_logprob(model: str, token: str) -> float:
    """A stub model that is less sure of longer tokens (every token gets its own value)."""
    return -0.05 * len(token) - (0.5 if model.endswith("v2") else 0.0)


@pytest.fixture
def served(gateway_factory: Callable[..., Harness], stub: ChatStub) -> Iterator[tuple[Harness, str]]:
    stub.config.logprob = token_logprob
    harness = gateway_factory()
    with harness.serve() as base_url:
        yield harness, base_url


def upstream_content(stub: ChatStub, version: str) -> list[dict[str, Any]]:
    """What the version's upstream itself reports when asked for logprobs."""
    direct = openai.OpenAI(base_url=stub.base_url, api_key="unused", max_retries=0)
    answer = direct.chat.completions.create(
        model=ENDPOINT_MODELS[version],
        messages=QUESTION,  # type: ignore[arg-type]
        logprobs=True,
    )
    assert answer.choices[0].logprobs is not None and answer.choices[0].logprobs.content
    return [entry.model_dump() for entry in answer.choices[0].logprobs.content]


def test_answers_log_the_upstreams_mean_and_clients_see_what_they_asked_for(
    served: tuple[Harness, str], stub: ChatStub, schemas: dict[str, Any]
) -> None:
    harness, base_url = served
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    content = upstream_content(stub, "1")
    expected = sum(e["logprob"] for e in content) / len(content)

    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION)  # type: ignore[arg-type]
    body = json.loads(raw.http_response.text)
    assert body["choices"][0]["logprobs"] is None  # the gateway asked, the client did not
    assert_matches("CreateChatCompletionResponse", body)

    asked = client.chat.completions.create(model=MODEL, messages=QUESTION, logprobs=True)  # type: ignore[arg-type]
    assert asked.choices[0].logprobs is not None
    assert [e.model_dump() for e in asked.choices[0].logprobs.content or ()] == content  # passed through

    chunks = list(client.chat.completions.create(model=MODEL, messages=QUESTION, stream=True))  # type: ignore[arg-type]
    assert chunks and all(c.choices[0].logprobs is None for c in chunks if c.choices)
    streamed_asked = list(
        client.chat.completions.create(model=MODEL, messages=QUESTION, stream=True, logprobs=True)  # type: ignore[arg-type]
    )
    tokens = [e.model_dump() for c in streamed_asked if c.choices and c.choices[0].logprobs
              for e in c.choices[0].logprobs.content or ()]  # fmt: skip
    assert tokens == content

    rows = [r for r in harness.answers() if r.role == "answer"]
    assert [r.streamed for r in rows] == [False, False, True, True]
    assert [r.mean_logprob for r in rows] == pytest.approx([expected] * 4)


def test_capture_off_asks_for_nothing(gateway_factory: Callable[..., Harness], stub: ChatStub) -> None:
    stub.config.logprob = token_logprob
    harness = gateway_factory(serving=ServingConfig(refresh_seconds=0.2, capture_logprobs=False))
    with harness.serve() as base_url:
        _ask_three_ways(base_url)
    means = [r.mean_logprob for r in harness.answers()]
    assert means[:2] == [None, None] and means[2] is not None


def _ask_three_ways(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    client.chat.completions.create(model=MODEL, messages=QUESTION)  # type: ignore[arg-type]
    list(client.chat.completions.create(model=MODEL, messages=QUESTION, stream=True))  # type: ignore[arg-type]
    asked = client.chat.completions.create(model=MODEL, messages=QUESTION, logprobs=True)  # type: ignore[arg-type]
    assert asked.choices[0].logprobs is not None  # a client that asks still gets them


def test_an_upstream_without_logprobs_leaves_the_mean_unknown(
    gateway_factory: Callable[..., Harness], stub: ChatStub
) -> None:
    stub.config.logprob = None  # it ignores the parameter, as some OpenAI-compatible servers do
    harness = gateway_factory()
    with harness.serve() as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        answer = client.chat.completions.create(model=MODEL, messages=QUESTION)  # type: ignore[arg-type]
        assert answer.choices[0].message.content
    assert [r.mean_logprob for r in harness.answers()] == [None]


@pytest.mark.slow
def test_the_local_service_as_upstream_gives_the_mean_of_its_own_logprobs(
    gateway_factory: Callable[..., Harness], claims: RegistryStore, local_service: ServiceProcess
) -> None:
    tags = {"tuneops.provider": "local", "tuneops.endpoint_model": "tuneops-tiny"}
    served = claims.create_version(MODEL, f"{claims.artifact_root}/tiny", None, tags, "", None)  # type: ignore[arg-type]
    claims.set_alias(MODEL, "champion", served.version)
    request: dict[str, Any] = {"messages": QUESTION, "max_tokens": 12, "temperature": 0}
    direct = openai.OpenAI(base_url=local_service.base_url, api_key="unused", max_retries=0)
    own = direct.chat.completions.create(model="tuneops-tiny", logprobs=True, **request)
    content = own.choices[0].logprobs.content or []  # type: ignore[union-attr]
    expected = sum(e.logprob for e in content) / len(content)

    harness = gateway_factory(base_url=local_service.base_url)
    with harness.serve() as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        plain = client.chat.completions.create(model=MODEL, **request)
        streamed = list(client.chat.completions.create(model=MODEL, stream=True, **request))
    assert (
        plain.choices[0].logprobs is None
        and plain.choices[0].message.content == own.choices[0].message.content
    )
    assert all(c.choices[0].logprobs is None for c in streamed if c.choices)
    rows = harness.answers()
    assert [r.version for r in rows] == [served.version] * 2
    assert [r.mean_logprob for r in rows] == pytest.approx([expected] * 2, abs=1e-4)


class _Provider:
    def __init__(self, provider: str) -> None:
        self.provider = provider


def test_the_capture_decides_per_request_and_per_provider() -> None:
    body: dict[str, Any] = {"model": "m", "messages": QUESTION}
    on = LogprobCapture.of(body, enabled=True)
    assert on == LogprobCapture(client_asked=False, add=True)
    for kind in ("local", "openai", "azure-openai"):
        assert on.body_for(body, _Provider(kind)) == {**body, "logprobs": True}
    assert on.body_for(body, _Provider("some-other-kind")) is body  # not known to take the parameter
    assert "logprobs" not in body  # the client's body is never changed
    assert LogprobCapture.of(body, enabled=False).body_for(body, _Provider("local")) is body
    asked = LogprobCapture.of({**body, "logprobs": True, "top_logprobs": 2}, enabled=True)
    assert asked == LogprobCapture(client_asked=True, add=False)
    # top_logprobs without logprobs is the client's error to get from the upstream, not ours to fix
    assert not LogprobCapture.of({**body, "top_logprobs": 2}, enabled=True).add


def test_settle_and_gather_read_the_first_choice_and_strip_only_what_was_added() -> None:
    def answer() -> dict[str, Any]:
        logprobs = {"content": [{"token": "a", "logprob": -1.0}, {"token": "b", "logprob": -3.0}]}
        return {"choices": [{"index": 0, "logprobs": logprobs}, {"index": 1, "logprobs": {"content": []}}]}

    added = answer()
    assert LogprobCapture(False, add=True).settle(added) == -2.0
    assert [c["logprobs"] for c in added["choices"]] == [None, None]
    passed = answer()
    assert LogprobCapture(True, add=False).settle(passed) == -2.0 and passed == answer()
    unusable = {"content": [{"logprob": "low"}, {"logprob": True}, {"logprob": float("-inf")}]}
    for garbage in ({}, {"choices": []}, {"choices": ["x"]}, {"choices": [{"logprobs": {"content": "x"}}]},
                    {"choices": [{"logprobs": unusable}]}):  # fmt: skip
        assert mean_logprob(garbage) is None

    gather = StreamLogprobs(strip=True)
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": {"content": [{"logprob": -0.5}]}}]},
        {"choices": [{"index": 0, "delta": {"content": "b"}, "logprobs": {"content": [{"logprob": -1.5}]}}]},
        {"choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"completion_tokens": 2}},
    ]
    for chunk in chunks:
        gather.observe(chunk)
    assert gather.mean == -1.0 and all(c["logprobs"] is None for chunk in chunks for c in chunk["choices"])
    assert StreamLogprobs(strip=False).mean is None


def test_a_version_that_refuses_logprobs_is_asked_again_without_them(
    gateway_factory: Callable[..., Harness], stub: ChatStub
) -> None:
    """OpenAI's reasoning models answer ``logprobs`` with a 400: a client that never asked for
    them must still get its answer, and the gateway stops adding them for that version."""
    stub.config.logprob = token_logprob
    stub.config.refuses_logprobs = lambda model: model == ENDPOINT_MODELS["1"]
    harness = gateway_factory()
    with harness.serve() as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        for _ in range(3):
            answer = client.chat.completions.create(model=MODEL, messages=QUESTION)  # type: ignore[arg-type]
            assert answer.choices[0].message.content and answer.choices[0].logprobs is None
        streamed = client.chat.completions.create(model=MODEL, messages=QUESTION, stream=True)  # type: ignore[arg-type]
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        with pytest.raises(openai.BadRequestError, match="logprobs"):  # the client's own ask is its own
            client.chat.completions.create(model=MODEL, messages=QUESTION, logprobs=True)  # type: ignore[arg-type]
    assert [r.status_code for r in harness.answers()] == [200, 200, 200, 200, 400]
    assert all(r.mean_logprob is None for r in harness.answers())
    assert stub.stats.statuses[400] == 2  # one refusal of the gateway's addition, one of the client's ask
