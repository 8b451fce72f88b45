"""The HTTP face of the local service: OpenAI's routes, errors and auth, on FastAPI.

Bodies are parsed by hand rather than through FastAPI models so that every malformed request gets
OpenAI's error shape (``{"error": {"message", "type", "param", "code"}}``) with a 4xx status, not
FastAPI's ``detail`` list. Auth and the request size limit are a plain ASGI wrapper: cheaper per
request than ``BaseHTTPMiddleware``, which matters for the < 5 ms overhead goal.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from tuneops.errors import TuneopsError
from tuneops.serving.local.chat import ChunkFactory, completion, parse_chat_request
from tuneops.serving.local.inference import GenerationResult, ModelCache, PromptTooLong, SamplingParams
from tuneops.serving.local.rules import ApiError
from tuneops.serving.local.service import LocalService

log = logging.getLogger("tuneops.serving.local")
DEFAULT_PAGE = 20
MAX_PAGE = 100


def _error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    return JSONResponse(
        ApiError(message, status_code=status, type=type, param=param, code=code).body(), status_code=status
    )


class GuardMiddleware:
    """Bearer-token auth and a request body size limit, answered in OpenAI's error shape."""

    def __init__(
        self, app: ASGIApp, *, api_key: str | None, max_request_bytes: int, max_file_bytes: int
    ) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_request_bytes = max_request_bytes
        self.max_file_bytes = max_file_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.api_key is not None:
            given = headers.get(b"authorization", b"")
            if not (given.startswith(b"Bearer ") and hmac.compare_digest(given[7:], self.api_key)):
                await _error(
                    401,
                    "Incorrect API key provided. Pass the service's key as a Bearer token.",
                    code="invalid_api_key",
                )(scope, receive, send)
                return
        limit = self.max_file_bytes + 64 * 1024 if scope["path"] == "/v1/files" else self.max_request_bytes
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _error(
                413,
                f"Request body of {int(length)} bytes exceeds the limit of {limit} bytes.",
                code="request_too_large",
            )(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise ApiError(
                        f"Request body exceeds the limit of {limit} bytes.",
                        status_code=413,
                        code="request_too_large",
                    )
            return message

        await self.app(scope, limited_receive, send)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
            "your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            code="invalid_json",
        ) from exc


def _page(request: Request) -> tuple[str | None, int]:
    raw = request.query_params.get("limit")
    try:
        limit = int(raw) if raw is not None else DEFAULT_PAGE
    except ValueError as exc:
        raise ApiError(f"Invalid 'limit': expected an integer, got {raw!r}.", param="limit") from exc
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(f"Invalid 'limit': must be between 1 and {MAX_PAGE}.", param="limit")
    return request.query_params.get("after"), limit


def create_app(service: LocalService, *, manage_lifecycle: bool = True) -> FastAPI:
    """The ASGI app over ``service``; with ``manage_lifecycle`` it starts/stops the worker."""
    models = ModelCache(service.config.max_loaded_models)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        if manage_lifecycle:
            service.start()
        yield
        if manage_lifecycle:
            await run_in_threadpool(service.stop)

    app = FastAPI(
        title="tuneops local OpenAI-compatible service",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code or 400)

    @app.exception_handler(TuneopsError)
    async def _tuneops_error(_request: Request, exc: TuneopsError) -> JSONResponse:
        log.error("request failed: %s", exc.one_line())
        return _error(500, exc.one_line(), type="server_error", code="internal_error")

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _error(
            400, f"Invalid request: {first.get('msg', 'bad parameters')}", param=param, code="invalid_value"
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _error(404, f"Invalid URL ({request.method} {request.url.path})", code="unknown_url")
        return _error(exc.status_code, str(exc.detail))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": await run_in_threadpool(service.list_models)}

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str) -> dict[str, Any]:
        for entry in await run_in_threadpool(service.list_models):
            if entry["id"] == model:
                return entry
        raise ApiError(
            f"The model `{model}` does not exist or you do not have access to it.",
            status_code=404,
            param="model",
            code="model_not_found",
        )

    @app.post("/v1/files")
    async def create_file(request: Request) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ApiError("Uploads must be multipart/form-data with 'file' and 'purpose'.", param="file")
        form = await request.form()
        upload, purpose = form.get("file"), form.get("purpose")
        if upload is None or isinstance(upload, str):
            raise ApiError(
                "Missing file: send it as the multipart field 'file'.",
                param="file",
                code="missing_required_parameter",
            )
        if not isinstance(purpose, str):
            raise ApiError("Missing purpose.", param="purpose", code="missing_required_parameter")
        data = await upload.read()
        return await run_in_threadpool(service.create_file, upload.filename or "upload", purpose, data)

    @app.get("/v1/files")
    async def list_files(request: Request) -> dict[str, Any]:
        after, limit = _page(request)
        return service.list_files(
            purpose=request.query_params.get("purpose"),
            after=after,
            limit=limit,
            order=request.query_params.get("order", "desc"),
        )

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str) -> dict[str, Any]:
        return service.get_file(file_id).public()

    @app.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str) -> dict[str, Any]:
        return service.delete_file(file_id)

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str) -> Response:
        return Response(
            await run_in_threadpool(service.file_content, file_id), media_type="application/octet-stream"
        )

    @app.post("/v1/fine_tuning/jobs")
    async def create_job(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise ApiError("The request body must be a JSON object.", code="invalid_type")
        return await run_in_threadpool(service.create_job, body)

    @app.get("/v1/fine_tuning/jobs")
    async def list_jobs(request: Request) -> dict[str, Any]:
        after, limit = _page(request)
        metadata = {
            key[len("metadata[") : -1]: value
            for key, value in request.query_params.items()
            if key.startswith("metadata[") and key.endswith("]")
        }
        return service.list_jobs(after=after, limit=limit, metadata=metadata)

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    async def get_job(job_id: str) -> dict[str, Any]:
        return service.get_job(job_id)

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str) -> dict[str, Any]:
        return service.cancel_job(job_id)

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    async def list_events(job_id: str, request: Request) -> dict[str, Any]:
        after, limit = _page(request)
        return service.list_events(job_id, after=after, limit=limit)

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    async def list_checkpoints(job_id: str, request: Request) -> dict[str, Any]:
        after, limit = _page(request)
        return service.list_checkpoints(
            job_id, after=after, limit=10 if "limit" not in request.query_params else limit
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        chat = parse_chat_request(await _json_body(request))
        params = SamplingParams(
            max_tokens=chat.max_tokens,
            temperature=chat.temperature,
            top_p=chat.top_p,
            seed=chat.seed,
            stop=chat.stop,
        )

        def load() -> Any:
            base_dir, adapter_dir = service.resolve_model(chat.model)
            return models.get(base_dir, adapter_dir)

        def answer() -> dict[str, Any]:  # one thread hop per request: the < 5 ms overhead budget
            result = load().complete(chat.messages, params)
            return completion(
                chat.model, result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens
            )

        try:
            if not chat.stream:
                return JSONResponse(await run_in_threadpool(answer))
            model = await run_in_threadpool(load)
            stream = model.stream(chat.messages, params)
            first = await run_in_threadpool(next, stream)
        except PromptTooLong as exc:
            raise ApiError(str(exc), param="messages", code="context_length_exceeded") from exc
        return StreamingResponse(
            _sse(ChunkFactory(chat.model, chat.include_usage), first, stream), media_type="text/event-stream"
        )

    return app


def _sse(
    chunks: ChunkFactory, first: str | GenerationResult, rest: Iterator[str | GenerationResult]
) -> Iterator[str]:
    """Server-sent events of one streamed completion, ending with ``[DONE]``."""
    yield f"data: {json.dumps(chunks.delta('', role=True))}\n\n"
    item: str | GenerationResult = first
    while True:
        if isinstance(item, GenerationResult):
            yield f"data: {json.dumps(chunks.finish(item.finish_reason))}\n\n"
            if chunks.include_usage:
                yield f"data: {json.dumps(chunks.usage(item.prompt_tokens, item.completion_tokens))}\n\n"
            break
        if item:
            yield f"data: {json.dumps(chunks.delta(item))}\n\n"
        item = next(rest)
    yield "data: [DONE]\n\n"


def build_asgi(service: LocalService) -> ASGIApp:
    """The app wrapped in the auth / size guard: what uvicorn serves."""
    return GuardMiddleware(
        create_app(service),
        api_key=service.config.api_key,
        max_request_bytes=service.config.max_request_bytes,
        max_file_bytes=service.config.max_file_bytes,
    )
