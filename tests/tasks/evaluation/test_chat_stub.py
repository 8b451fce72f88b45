"""The chat stub speaks OpenAI's documented protocol: bodies validate against the OpenAPI reference.

(The stub ships in ``tuneops.testing``; its tests live with the stage that owns it.)
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tuneops.testing.chat_stub import StubConfig, canned_answers, running_chat_stub
from tuneops.testing.reference.openapi import assert_matches

CHAT = {"model": "m-1", "messages": [{"role": "user", "content": "Capital of Norway?"}]}


def test_bodies_validate_against_the_reference(schemas: dict[str, Any]) -> None:
    config = StubConfig(answer=canned_answers({"Capital of Norway?": "Oslo."}), models=("m-1", "m-2"))
    with running_chat_stub(config) as stub, httpx.Client(base_url=stub.base_url) as http:
        reply = http.post("/chat/completions", json=CHAT)
        assert reply.status_code == 200
        assert_matches("CreateChatCompletionResponse", reply.json())
        assert reply.json()["choices"][0]["message"]["content"] == "Oslo."
        models = http.get("/models").json()
        assert_matches("ListModelsResponse", models)
        assert [m["id"] for m in models["data"]] == ["m-1", "m-2"]
        missing = http.post("/chat/completions", json={"model": "m-1"})
        assert missing.status_code == 400
        assert_matches("ErrorResponse", missing.json())


@pytest.mark.parametrize(("share_429", "share_500", "status"), [(1.0, 0.0, 429), (0.0, 1.0, 500)])
def test_injected_faults_are_openai_error_bodies(
    schemas: dict[str, Any], share_429: float, share_500: float, status: int
) -> None:
    config = StubConfig(share_429=share_429, share_500=share_500, retry_after_s=2, retry_after_on_500=True)
    with running_chat_stub(config) as stub, httpx.Client(base_url=stub.base_url) as http:
        reply = http.post("/chat/completions", json=CHAT)
        assert reply.status_code == status and reply.headers["retry-after"] == "2"
        assert_matches("ErrorResponse", reply.json())
        assert stub.stats.statuses == {status: 1}


def test_a_wrong_key_is_a_401_error_body(schemas: dict[str, Any]) -> None:
    with running_chat_stub(api_key="sk-right") as stub, httpx.Client(base_url=stub.base_url) as http:
        reply = http.post("/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-wrong"})
        assert reply.status_code == 401
        assert_matches("ErrorResponse", reply.json())
        assert http.get("/models", headers={"Authorization": "Bearer sk-right"}).status_code == 200


def test_faults_per_request_are_capped() -> None:
    config = StubConfig(share_500=1.0, max_faults_per_request=2)
    with running_chat_stub(config) as stub, httpx.Client(base_url=stub.base_url) as http:
        codes = [http.post("/chat/completions", json=CHAT).status_code for _ in range(4)]
    assert codes == [500, 500, 200, 200]


@pytest.mark.parametrize("include_usage", [True, False])
def test_streams_are_openai_sse_chunks(schemas: dict[str, Any], include_usage: bool) -> None:
    config = StubConfig(answer=canned_answers({"Capital of Norway?": "It is Oslo."}))
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": include_usage}}
    with running_chat_stub(config) as stub, httpx.Client(base_url=stub.base_url) as http:
        reply = http.post("/chat/completions", json=request)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in reply.text.split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    for chunk in chunks:
        assert_matches("CreateChatCompletionStreamResponse", chunk)
    assert len({chunk["id"] for chunk in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "It is Oslo."
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    usage = [c["usage"] for c in chunks if c.get("usage")]
    if include_usage:
        assert chunks[-1]["choices"] == [] and usage == [
            {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
        ]
    else:
        assert usage == []
    assert stub.stats.statuses == {200: 1}


def test_the_openai_sdk_streams_from_the_stub() -> None:
    from openai import OpenAI

    with running_chat_stub(answer=canned_answers({"Capital of Norway?": "Oslo, of course."})) as stub:
        client = OpenAI(base_url=stub.base_url, api_key="test", max_retries=0)
        stream = client.chat.completions.create(
            model="m-1", messages=CHAT["messages"], stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        client.close()
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Oslo, of course."
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
