"""The HTTP face of the local service: OpenAI's routes on FastAPI.

Bodies are parsed by hand rather than through FastAPI models so that every malformed request gets
OpenAI's error shape with a 4xx status, not FastAPI's ``detail`` list. The error shape, the key and
size guard, paging and SSE framing are :mod:`tuneops.serving.openai_wire`'s, shared with the
gateway and the test stubs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from tuneops.serving.local.chat import ChunkFactory, completion, parse_chat_request
from tuneops.serving.local.inference import Delta, GenerationResult, ModelCache, PromptTooLong, SamplingParams
from tuneops.serving.local.service import LocalService
from tuneops.serving.openai_wire import (
    ApiError,
    ASGIApp,
    GuardMiddleware,
    install_error_handlers,
    json_body,
    page_params,
    sse_stream,
)

log = logging.getLogger("tuneops.serving.local")
BATCH_SIZE_HEADER = "x-tuneops-batch-size"  # how many requests were decoded together with this one
UPLOAD_OVERHEAD_BYTES = 64 * 1024  # multipart framing and the purpose field around an uploaded file


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

    install_error_handlers(app, log)

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
        after, limit = page_params(request.query_params)
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
        body = await json_body(request)
        if not isinstance(body, dict):
            raise ApiError("The request body must be a JSON object.", code="invalid_type")
        return await run_in_threadpool(service.create_job, body)

    @app.get("/v1/fine_tuning/jobs")
    async def list_jobs(request: Request) -> dict[str, Any]:
        after, limit = page_params(request.query_params)
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
        after, limit = page_params(request.query_params)
        return service.list_events(job_id, after=after, limit=limit)

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    async def list_checkpoints(job_id: str, request: Request) -> dict[str, Any]:
        after, limit = page_params(request.query_params, default=10)
        return service.list_checkpoints(job_id, after=after, limit=limit)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        chat = parse_chat_request(await json_body(request))
        params = SamplingParams(
            max_tokens=chat.max_tokens,
            temperature=chat.temperature,
            top_p=chat.top_p,
            seed=chat.seed,
            stop=chat.stop,
            logprobs=chat.logprobs,
            top_logprobs=chat.top_logprobs,
        )

        def load() -> Any:
            base_dir, adapter_dir = service.resolve_model(chat.model)
            return models.get(base_dir, adapter_dir)

        def answer() -> JSONResponse:  # one thread hop per request: the < 5 ms overhead budget
            result = load().submit(chat.messages, params)  # batched with concurrent requests
            body = completion(
                chat.model, result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens,
                result.logprobs,
            )  # fmt: skip
            return JSONResponse(body, headers={BATCH_SIZE_HEADER: str(result.batch_size)})

        try:
            if not chat.stream:
                return await run_in_threadpool(answer)
            model = await run_in_threadpool(load)
            stream = model.stream(chat.messages, params)
            first = await run_in_threadpool(next, stream)
        except PromptTooLong as exc:
            raise ApiError(str(exc), param="messages", code="context_length_exceeded") from exc
        return StreamingResponse(
            sse_stream(_chunks(ChunkFactory(chat.model, chat.include_usage, chat.logprobs), first, stream)),
            media_type="text/event-stream",
        )

    return app


def _chunks(
    chunks: ChunkFactory, first: Delta | GenerationResult, rest: Iterator[Delta | GenerationResult]
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of one streamed completion, usage last when asked."""
    yield chunks.delta("", role=True)
    item: Delta | GenerationResult = first
    while not isinstance(item, GenerationResult):
        if item.text or item.logprobs:
            yield chunks.delta(item.text, tokens=item.logprobs)
        item = next(rest)
    yield chunks.finish(item.finish_reason)
    if chunks.include_usage:
        yield chunks.usage(item.prompt_tokens, item.completion_tokens)


def build_asgi(service: LocalService) -> ASGIApp:
    """The app wrapped in the auth / size guard: what uvicorn serves."""
    config = service.config
    return GuardMiddleware(
        create_app(service),
        api_keys=[config.api_key] if config.api_key else [],
        max_request_bytes=config.max_request_bytes,
        path_limits={"/v1/files": config.max_file_bytes + UPLOAD_OVERHEAD_BYTES},
    )
