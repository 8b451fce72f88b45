"""The gateway over real HTTP with the official openai SDK: answers, headers, streaming, errors.

Upstreams are real chat stubs on free ports, the registry a real MLflow SQLite store, the
gateway served by uvicorn; the request log is read back from the state database.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest

from tests.serving.gateway.conftest import MODEL, Harness
from tuneops.testing.chat_stub import ChatStub
from tuneops.testing.reference.openapi import assert_matches

KEY = "gw-test-key"
QUESTION = [{"role": "user", "content": "Is a cracked windscreen covered?"}]


@pytest.fixture
def served(gateway_factory: Callable[..., Harness]) -> Iterator[tuple[Harness, str]]:
    harness = gateway_factory(api_keys=(KEY,))
    with harness.serve() as base_url:
        yield harness, base_url


def sdk(base_url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)


def test_sync_and_streaming_answers_through_the_sdk(
    served: tuple[Harness, str], schemas: dict[str, Any]
) -> None:
    harness, base_url = served
    client = sdk(base_url)

    # a user outside the 0% challenger share (no rollout weight yet): the champion answers
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION, user="alice")
    answer = raw.parse()
    assert answer.model == MODEL
    assert answer.choices[0].message.content == "v1 says: Is a cracked windscreen covered?"
    assert raw.headers["x-tuneops-model-version"] == "1"
    assert raw.headers["x-tuneops-arm"] == "champion"
    request_id = raw.headers["x-request-id"]
    assert_matches("CreateChatCompletionResponse", json.loads(raw.http_response.text))

    stream = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    assert stream.headers["x-tuneops-arm"] == "champion"
    chunks = list(stream.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "v1 says: Is a cracked windscreen covered?"
    assert {c.model for c in chunks} == {MODEL}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(text.split())
    for chunk in chunks:
        assert_matches("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True))

    # pins: an alias, a version
    pinned = client.chat.completions.with_raw_response.create(model=f"{MODEL}@challenger", messages=QUESTION)
    assert pinned.parse().choices[0].message.content.startswith("v2 says")
    assert (pinned.headers["x-tuneops-model-version"], pinned.headers["x-tuneops-arm"]) == ("2", "pinned")
    assert pinned.parse().model == f"{MODEL}@challenger"
    third = client.chat.completions.create(model=f"{MODEL}/3", messages=QUESTION)
    assert third.choices[0].message.content.startswith("v3 says")

    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert_matches("ListModelsResponse", httpx.get(f"{base_url}/models", headers=auth()).json())

    rows = harness.answers()
    assert len([r for r in rows if r.role == "answer"]) == 4
    first = next(r for r in rows if r.request_id == request_id)
    assert (first.model, first.version, first.arm, first.status_code, first.streamed) == (
        MODEL, "1", "champion", 200, False,
    )  # fmt: skip
    assert json.loads(first.prompt_text) == QUESTION
    assert first.response_text == "v1 says: Is a cracked windscreen covered?"
    assert first.user_key_hash and "alice" not in first.user_key_hash
    assert first.prompt_tokens is not None and first.completion_tokens == 7
    streamed = next(r for r in rows if r.streamed)
    assert streamed.response_text == text and streamed.ttft_ms is not None and streamed.completion_tokens


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_feedback_is_stored_beside_the_request(served: tuple[Harness, str]) -> None:
    harness, base_url = served
    raw = sdk(base_url).chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION)
    request_id = raw.headers["x-request-id"]
    reply = httpx.post(
        f"{base_url}/feedback", json={"request_id": request_id, "score": 0.8, "comment": "ok"}, headers=auth()
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["score"] == 0.8
    for bad in ({"request_id": request_id, "score": 1.5}, {"request_id": request_id, "score": True}, {}):
        refused = httpx.post(f"{base_url}/feedback", json=bad, headers=auth())
        assert refused.status_code == 400 and refused.json()["error"]["param"] in ("score", "request_id")
    harness.writer.flush(30)
    (attempt,) = harness.request_log.attempts(request_id)
    assert (attempt.feedback_score, attempt.feedback_comment) == (0.8, "ok")


@contextmanager
def garbage_upstream() -> Iterator[str]:
    """An upstream that answers 200 with a body that is not a chat completion."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"<html>bad gateway of some proxy</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_bad_requests_get_openai_errors_and_the_gateway_keeps_serving(served: tuple[Harness, str]) -> None:
    harness, base_url = served
    client = sdk(base_url)
    url = f"{base_url}/chat/completions"

    malformed = httpx.post(url, content=b'{"model": "claims-triage", "messages": [', headers=auth())
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=f"{MODEL}/99", messages=QUESTION)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=f"{MODEL}@nobody", messages=QUESTION)
    with pytest.raises(openai.AuthenticationError) as wrong:
        sdk(base_url, key="wrong").chat.completions.create(model=MODEL, messages=QUESTION)
    assert wrong.value.code == "invalid_api_key"
    unauthenticated = httpx.post(url, json={"model": MODEL, "messages": QUESTION})
    assert unauthenticated.status_code == 401 and "error" in unauthenticated.json()
    huge = [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]
    with pytest.raises(openai.APIStatusError) as too_big:
        client.chat.completions.create(model=MODEL, messages=huge)
    assert too_big.value.status_code == 413
    no_messages = httpx.post(url, json={"model": MODEL}, headers=auth())
    assert no_messages.status_code == 400 and no_messages.json()["error"]["param"] == "messages"

    answer = client.chat.completions.create(model=MODEL, messages=QUESTION)
    assert answer.choices[0].message.content.startswith("v1 says")
    assert httpx.get(base_url.removesuffix("/v1") + "/health").status_code == 200

    rows = [r for r in harness.answers() if r.role == "answer"]
    statuses = sorted(r.status_code for r in rows)
    assert statuses == [200, 400, 400, 404, 404, 404], statuses  # 401/413 are refused before the app
    assert KEY not in json.dumps([dict(r._mapping) for r in rows], default=str)


def test_upstream_garbage_is_a_502_and_the_gateway_keeps_serving(
    gateway_factory: Callable[..., Harness], stub: ChatStub
) -> None:
    with garbage_upstream() as bad_url:
        harness = gateway_factory(base_url=bad_url)
        with harness.serve() as base_url:
            client = sdk(base_url, key="unused")
            with pytest.raises(openai.APIStatusError) as garbage:
                client.chat.completions.create(model=MODEL, messages=QUESTION)
            assert garbage.value.status_code == 502
            assert garbage.value.code == "upstream_garbage"
            with pytest.raises(openai.APIStatusError) as garbage_stream:
                list(client.chat.completions.create(model=MODEL, messages=QUESTION, stream=True))
            assert garbage_stream.value.status_code == 502
            assert httpx.get(base_url.removesuffix("/v1") + "/health").status_code == 200
    rows = [r for r in harness.answers() if r.role == "answer"]
    assert [(r.status_code, r.error_kind) for r in rows] == [(502, "upstream_garbage")] * 2


def test_metrics_count_requests_per_model_version_and_arm(served: tuple[Harness, str]) -> None:
    _harness, base_url = served
    client = sdk(base_url)
    for user in ("a", "b", "c"):
        client.chat.completions.create(model=MODEL, messages=QUESTION, user=user)
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics").text
    assert (
        'tuneops_gateway_requests_total{arm="champion",model="claims-triage",status="200",version="1"} 3.0'
        in text
    )
    assert "tuneops_gateway_request_seconds_bucket" in text
    assert (
        'tuneops_gateway_tokens_total{arm="champion",kind="completion",model="claims-triage",version="1"}'
        in text
    )


def test_capture_off_keeps_sizes_not_texts_and_a_webhook_refreshes(
    gateway_factory: Callable[..., Harness],
) -> None:
    from tests.serving.gateway.conftest import run
    from tuneops.registry.webhooks import signature
    from tuneops.spec import ServingConfig

    harness = gateway_factory(serving=ServingConfig(capture_text=False), webhook_secret="hook-secret")

    async def scenario() -> None:
        async with harness.running(), harness.asgi_client() as client:
            reply = await client.post("/chat/completions", json={"model": MODEL, "messages": QUESTION})
            assert reply.status_code == 200
            body = b'{"entity": "model_version_alias", "action": "created", "data": {}}'
            headers = {
                "X-MLflow-Delivery-Id": "d1",
                "X-MLflow-Timestamp": str(int(time.time())),
                "X-MLflow-Signature": signature("hook-secret", "d1", str(int(time.time())), body),
            }
            hook = await client.post("http://gateway/mlflow-webhook", content=body, headers=headers)
            assert hook.status_code == 200, hook.text
            forged = await client.post(
                "http://gateway/mlflow-webhook",
                content=body,
                headers={**headers, "X-MLflow-Signature": "v1,x"},
            )
            assert forged.status_code == 401

    run(scenario())
    (row,) = [r for r in harness.answers() if r.role == "answer"]
    assert row.prompt_text is None and row.response_text is None
    assert row.prompt_chars == len(QUESTION[0]["content"]) and row.response_chars > 0
