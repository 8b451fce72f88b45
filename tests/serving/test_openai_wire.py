"""The shared OpenAI wire module: error bodies, JSON bodies, paging, SSE, the key and size guard."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from jsonschema import Draft202012Validator

from tuneops.errors import ProviderRejectedError, StoreError
from tuneops.serving.openai_wire import (
    INVALID_JSON,
    SSE_DONE,
    ApiError,
    GuardMiddleware,
    Receive,
    Scope,
    Send,
    bearer_key_accepted,
    error_body,
    install_error_handlers,
    json_body,
    page_params,
    parse_json,
    sse_stream,
    unknown_url,
)
from tuneops.testing.reference.openapi import openai_reference


def test_error_bodies_have_openai_shape() -> None:
    error = ApiError("bad", status_code=404, param="model", code="model_not_found")
    assert isinstance(error, ProviderRejectedError) and error.status_code == 404
    assert error.body() == {
        "error": {
            "message": "bad",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    assert error_body("slow down", type="requests", code="rate_limit_exceeded") == {
        "error": {"message": "slow down", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    }
    missing = unknown_url("GET", "/v1/nope")
    assert (missing.status_code, missing.code, missing.message) == (
        404,
        "unknown_url",
        "Invalid URL (GET /v1/nope)",
    )


def test_error_bodies_validate_against_the_reference() -> None:
    components = json.loads(openai_reference().read_text())["components"]
    validator = Draft202012Validator({"$ref": "#/components/schemas/ErrorResponse", "components": components})
    for body in (error_body("x"), ApiError("y", param="limit", code="invalid_value").body()):
        assert not list(validator.iter_errors(body)), body
    assert list(validator.iter_errors({"error": {"message": "x"}}))  # the check can fail


def test_json_bodies_parse_or_give_openais_invalid_json() -> None:
    assert parse_json(b'{"a": [1]}') == {"a": [1]}
    for raw in (b"{not json", b"[1,", b"\xff\xfe"):
        with pytest.raises(ApiError) as info:
            parse_json(raw)
        assert (info.value.status_code, info.value.code, info.value.message) == (
            400,
            "invalid_json",
            INVALID_JSON,
        )


def test_paging_parameters_are_checked_as_openai_checks_them() -> None:
    assert page_params({}) == (None, 20)
    assert page_params({"after": "ftjob-1", "limit": "100"}) == ("ftjob-1", 100)
    assert page_params({}, default=10) == (None, 10)
    assert page_params({"limit": "5000"}, maximum=10_000) == (None, 5000)
    for bad in ("lots", "0", "101", "-1"):
        with pytest.raises(ApiError) as info:
            page_params({"limit": bad})
        assert info.value.param == "limit" and info.value.status_code == 400


def test_sse_frames_each_event_and_ends_with_done() -> None:
    frames = list(sse_stream([{"n": 1}, {"n": 2, "s": "a\nb"}]))
    assert frames[-1] == SSE_DONE == "data: [DONE]\n\n"
    assert all(frame.startswith("data: ") and frame.endswith("\n\n") for frame in frames)
    assert [json.loads(frame[6:]) for frame in frames[:-1]] == [{"n": 1}, {"n": 2, "s": "a\nb"}]
    assert list(sse_stream([])) == [SSE_DONE]


def test_bearer_keys() -> None:
    assert bearer_key_accepted(None, [])  # no key configured: open
    keys = {"sk-old", "sk-new"}
    assert bearer_key_accepted("Bearer sk-old", keys) and bearer_key_accepted(b"Bearer sk-new", keys)
    for given in (None, "", "sk-old", "Bearer sk-other", "Basic sk-old", "Bearer sk-old "):
        assert not bearer_key_accepted(given, keys), given


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body and answers with its size."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def _request(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://guarded") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def _openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


def test_the_guard_accepts_any_of_its_keys_and_leaves_probes_open() -> None:
    guard = GuardMiddleware(_echo, api_keys={"sk-a", "sk-b"}, max_request_bytes=1000)
    for key in ("sk-a", "sk-b"):
        ok = _request(guard, "POST", "/v1/x", content=b"abc", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200 and ok.text == "3"
    assert _openai_error(_request(guard, "GET", "/v1/x"), 401)["code"] == "invalid_api_key"
    wrong = _request(guard, "GET", "/v1/x", headers={"Authorization": "Bearer sk-c"})
    assert _openai_error(wrong, 401)["code"] == "invalid_api_key"
    for path in ("/health", "/metrics"):
        assert _request(guard, "GET", path).status_code == 200
    assert _request(GuardMiddleware(_echo, max_request_bytes=1000), "GET", "/v1/x").status_code == 200


def test_the_guard_limits_request_bodies_per_path() -> None:
    guard = GuardMiddleware(_echo, max_request_bytes=10, path_limits={"/v1/files": 100})
    too_big = _request(guard, "POST", "/v1/x", content=b"x" * 11)
    assert _openai_error(too_big, 413)["code"] == "request_too_large"
    assert _request(guard, "POST", "/v1/files", content=b"x" * 100).text == "100"
    assert _openai_error(_request(guard, "POST", "/v1/files", content=b"x" * 101), 413)

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted as it arrives
        for _ in range(3):
            yield b"x" * 5

    with pytest.raises(ApiError) as cut:
        _request(guard, "POST", "/v1/x", content=chunks())
    assert cut.value.status_code == 413 and cut.value.code == "request_too_large"


def _app_with_handlers() -> FastAPI:
    import logging

    app = FastAPI()
    install_error_handlers(app, logging.getLogger("test.wire"))

    @app.post("/v1/echo")
    async def echo(request: Request) -> Any:
        return await json_body(request)

    @app.get("/v1/refused")
    async def refused() -> None:
        raise ApiError("no such model", status_code=404, param="model", code="model_not_found")

    @app.get("/v1/broken")
    async def broken() -> None:
        raise StoreError("disk full", hint="free some space")

    @app.get("/v1/typed")
    async def typed(n: int) -> dict[str, int]:
        return {"n": n}

    return app


def test_fastapi_failures_are_openai_errors() -> None:
    app = _app_with_handlers()
    assert _request(app, "POST", "/v1/echo", json={"a": 1}).json() == {"a": 1}
    assert _openai_error(_request(app, "POST", "/v1/echo", content=b"{no"), 400)["code"] == "invalid_json"
    refused = _openai_error(_request(app, "GET", "/v1/refused"), 404)
    assert (refused["param"], refused["code"]) == ("model", "model_not_found")
    broken = _openai_error(_request(app, "GET", "/v1/broken"), 500)
    assert (broken["type"], broken["code"]) == ("server_error", "internal_error")
    assert "disk full" in broken["message"]
    typed = _openai_error(_request(app, "GET", "/v1/typed", params={"n": "x"}), 400)
    assert (typed["param"], typed["code"]) == ("n", "invalid_value")
    unknown = _openai_error(_request(app, "GET", "/v1/nowhere"), 404)
    assert (unknown["code"], unknown["message"]) == ("unknown_url", "Invalid URL (GET /v1/nowhere)")
    assert _openai_error(_request(app, "DELETE", "/v1/echo"), 405)["type"] == "invalid_request_error"


def test_importing_the_wire_module_stays_light() -> None:
    """The stdlib stubs import it: no web framework, and never the pipeline's tasks or flows."""
    code = (
        "import sys, tuneops.serving.openai_wire\n"
        "heavy = ('starlette', 'fastapi', 'pydantic', 'tuneops.tasks', 'tuneops.flows', 'tuneops.registry')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
