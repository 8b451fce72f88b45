"""``POST /v1/chat/completions`` through the gateway: route, forward, fail over, log, answer.

One request, in order: parse the body (OpenAI's errors for anything malformed), resolve the
requested ``model`` against the routing table with the request's assignment key, forward to the
chosen version's upstream, and when a *challenger* upstream fails before any byte reached the
client, log that attempt as a ``failover`` row and answer from the champion. The ``answer`` row
(errors included) is durable in the request log's spool before the response completes: for a
plain answer before it is sent, for a stream before its final ``[DONE]``. A shadow copy (shadow
strategy) is sent after the answer and logged as a ``shadow`` row; nobody waits for it.

Stored prompt text is the request's ``messages`` as JSON (what harvest turns back into training
rows); with ``serving.capture_text`` off, only sizes, tokens and the hashed user key are kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import orjson
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from tuneops.append_only import utcnow
from tuneops.errors import StoreError, VersionNotFoundError
from tuneops.requestlog import RequestRecord, RequestSink
from tuneops.serving.gateway.assignment import (
    ModelNameError,
    ModelTarget,
    NoRoute,
    Route,
    assignment_key,
    hash_user_key,
    new_request_id,
    parse_model,
    resolve,
)
from tuneops.serving.gateway.confidence import LogprobCapture, LogprobRefusals, StreamLogprobs, mean_logprob
from tuneops.serving.gateway.metrics import GatewayMetrics
from tuneops.serving.gateway.signals import format_ok, is_refusal
from tuneops.serving.gateway.table import RoutingTables
from tuneops.serving.gateway.upstreams import (
    UnservableVersion,
    Upstream,
    UpstreamFailure,
    UpstreamRejected,
    UpstreamStream,
    complete,
    open_stream,
)
from tuneops.serving.openai_wire import INVALID_JSON, ApiError, error_body
from tuneops.spec import FormatConfig

log = logging.getLogger("tuneops.serving.gateway")

USER_HEADER = "x-tuneops-user"
VERSION_HEADER = "x-tuneops-model-version"
ARM_HEADER = "x-tuneops-arm"
REQUEST_ID_HEADER = "x-request-id"
SSE_DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class ChatOptions:
    """What the chat route needs from the spec: text capture and the answer format to check."""

    capture_text: bool = True
    answer_format: FormatConfig = field(default_factory=FormatConfig)
    capture_logprobs: bool = True  # each answer's mean token logprob (see confidence.py)


@dataclass
class _Call:
    """One client request as it goes through the gateway."""

    request_id: str
    started: float
    model: str = ""  # the registered model name (what the log and metrics are keyed by)
    label: str = "unknown"  # the metrics label: a served name, or "unknown"
    user_key_hash: str | None = None
    prompt_text: str | None = None
    prompt_chars: int = 0
    stream: bool = False
    at: Any = field(default_factory=utcnow)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


def _text_chars(messages: list[Any]) -> int:
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return total


def _usage(answer: dict[str, Any]) -> tuple[int | None, int | None]:
    usage = answer.get("usage")
    if not isinstance(usage, dict):
        return None, None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (prompt if isinstance(prompt, int) else None, completion if isinstance(completion, int) else None)


def _message(answer: dict[str, Any]) -> tuple[str, object]:
    """The first choice's text and refusal field of a chat completion."""
    choices = answer.get("choices") or []
    message = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
    if not isinstance(message, dict):
        return "", None
    content = message.get("content")
    return (content if isinstance(content, str) else ""), message.get("refusal")


class ChatCompletions:
    """The chat completion route of one gateway."""

    def __init__(
        self,
        tables: RoutingTables,
        writer: RequestSink,
        metrics: GatewayMetrics,
        client: Callable[[], httpx.AsyncClient],
        options: ChatOptions,
        plain_client: Callable[[], Any] | None = None,
    ) -> None:
        self.tables, self.writer, self.metrics = tables, writer, metrics
        self._client = client
        self._plain = plain_client or client  # plain completions (an aiohttp session in production)
        self.options = options
        self._background: set[asyncio.Task[None]] = set()
        self._logprob_refusals = LogprobRefusals()

    # -- the route -----------------------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        call = _Call(new_request_id(), time.perf_counter())
        try:
            body, target = self._parse(await request.body(), call)
            key = assignment_key(body.get("user"), request.headers.get(USER_HEADER), call.request_id)
            call.user_key_hash = hash_user_key(key.value)
            table = self.tables.table(target.model)
            if table is None:
                raise ApiError(
                    f"The gateway has not loaded the routing of `{target.model}` yet; retry shortly.",
                    status_code=503, type="server_error", code="routing_unavailable",
                )  # fmt: skip
            route = resolve(table, target, key.value)
            if isinstance(route, NoRoute):
                raise ApiError(route.reason, status_code=404, param="model", code="model_not_found")
            if call.stream:
                return await self._stream(call, body, route)
            return await self._complete(call, body, route)
        except ApiError as exc:
            return await self._refuse(call, exc)

    def _parse(self, raw: bytes, call: _Call) -> tuple[dict[str, Any], ModelTarget]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(INVALID_JSON, code="invalid_json") from exc
        if not isinstance(body, dict):
            raise ApiError("The request body must be a JSON object.", code="invalid_json")
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not model:
            raise ApiError(
                "you must provide a model parameter", param="model", code="missing_required_parameter"
            )
        try:
            target = parse_model(model)
        except ModelNameError as exc:
            raise self._not_found(model) from exc
        if target.model not in self.tables.models:
            raise self._not_found(model)
        call.model, call.label = target.model, target.model
        call.stream = bool(body.get("stream"))
        if not isinstance(messages, list) or not messages:
            raise ApiError(
                "'messages' must be a non-empty array of messages.", param="messages",
                code="missing_required_parameter" if messages is None else "invalid_type",
            )  # fmt: skip
        call.prompt_chars = _text_chars(messages)
        if self.options.capture_text:
            call.prompt_text = orjson.dumps(messages).decode()
        return body, target

    @staticmethod
    def _not_found(model: str) -> ApiError:
        return ApiError(
            f"The model `{model}` does not exist or you do not have access to it.",
            status_code=404, param="model", code="model_not_found",
        )  # fmt: skip

    # -- one upstream attempt ------------------------------------------------------------------

    async def _ask(
        self, upstream: Upstream, body: dict[str, Any], logprobs: LogprobCapture
    ) -> dict[str, Any]:
        """A plain completion; asked again without the logprobs the gateway added if they were refused."""
        sent = logprobs.body_for(body, upstream, self._logprob_refusals)
        try:
            answer: dict[str, Any] = await complete(self._plain(), upstream, sent)
        except UpstreamRejected as exc:
            if sent is body or not self._logprob_refusals.note(upstream, exc.body):
                raise
            answer = await complete(self._plain(), upstream, body)
        return answer

    async def _open(
        self, upstream: Upstream, body: dict[str, Any], logprobs: LogprobCapture
    ) -> UpstreamStream:
        """A stream, opened again without the logprobs the gateway added if they were refused."""
        sent = logprobs.body_for(body, upstream, self._logprob_refusals)
        try:
            return await open_stream(self._client(), upstream, sent)
        except UpstreamRejected as exc:
            if sent is body or not self._logprob_refusals.note(upstream, exc.body):
                raise
            return await open_stream(self._client(), upstream, body)

    # -- plain answers -------------------------------------------------------------------------

    async def _complete(self, call: _Call, body: dict[str, Any], route: Route) -> Response:
        pending: list[Awaitable[None]] = []
        version, arm = route.version, route.arm
        logprobs = LogprobCapture.of(body, self.options.capture_logprobs)
        try:
            try:
                answer = await self._ask(await self._upstream(call, version), body, logprobs)
            except UpstreamFailure as exc:
                if route.fallback is None:
                    raise
                pending.append(self._log_failover(call, route, exc))
                version, arm = route.fallback, "champion"
                answer = await self._ask(await self._upstream(call, version), body, logprobs)
        except UpstreamFailure as exc:
            return await self._upstream_error(call, version, arm, exc, pending)
        except UpstreamRejected as exc:
            return await self._rejected(call, version, arm, exc, pending)
        text, refusal = _message(answer)
        prompt_tokens, completion_tokens = _usage(answer)
        record = self._record(
            call, 200, version, arm, text, refusal, prompt_tokens, completion_tokens, logprobs.settle(answer)
        )
        pending.append(self._durable(record))
        await self._all_durable(pending)
        self.metrics.answered(
            call.label,
            version,
            arm,
            200,
            time.perf_counter() - call.started,
            prompt_tokens,
            completion_tokens,
        )
        self._maybe_shadow(call, body, route)
        answer["model"] = body["model"]
        return Response(
            orjson.dumps(answer), media_type="application/json", headers=self._headers(call, version, arm)
        )

    # -- streams -------------------------------------------------------------------------------

    async def _stream(self, call: _Call, body: dict[str, Any], route: Route) -> Response:
        pending: list[Awaitable[None]] = []
        version, arm = route.version, route.arm
        logprobs = LogprobCapture.of(body, self.options.capture_logprobs)
        try:
            try:
                stream = await self._open(await self._upstream(call, version), body, logprobs)
            except UpstreamFailure as exc:
                if route.fallback is None:
                    raise
                pending.append(self._log_failover(call, route, exc))
                version, arm = route.fallback, "champion"
                stream = await self._open(await self._upstream(call, version), body, logprobs)
        except UpstreamFailure as exc:
            return await self._upstream_error(call, version, arm, exc, pending)
        except UpstreamRejected as exc:
            return await self._rejected(call, version, arm, exc, pending)
        ttft_ms = call.elapsed_ms()
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        events = self._relay(
            call, body["model"], version, arm, stream, include_usage, ttft_ms, pending, logprobs.gather()
        )
        self._maybe_shadow(call, body, route)
        return StreamingResponse(
            events, media_type="text/event-stream", headers=self._headers(call, version, arm)
        )

    async def _relay(
        self, call: _Call, requested: str, version: str, arm: str, stream: UpstreamStream,
        include_usage: bool, ttft_ms: float, pending: list[Awaitable[None]], logprobs: StreamLogprobs,
    ) -> AsyncIterator[bytes]:  # fmt: skip
        """Relay the upstream's events (model renamed), log the answer, then send ``[DONE]``."""
        parts: list[str] = []
        usage: dict[str, Any] = {}
        status, error_kind, logged = 200, None, False
        try:
            try:
                async for event in _chain(stream.first, stream.rest()):
                    event["model"] = requested
                    logprobs.observe(event)
                    for choice in event.get("choices") or ():
                        delta = choice.get("delta") if isinstance(choice, dict) else None
                        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                            parts.append(delta["content"])
                    if isinstance(event.get("usage"), dict):
                        usage = event["usage"]
                        if not event.get("choices") and not include_usage:
                            continue  # the client did not ask for the usage chunk we asked for
                    yield _sse(event)
            except UpstreamFailure as exc:
                status, error_kind = exc.status_code, exc.kind
                self.metrics.failed(call.label, version, arm, exc.kind)
                yield _sse(error_body(exc.message, type="server_error", code=exc.kind))
            text = "".join(parts)
            record = replace(
                self._record(call, status, version, arm, text, None, usage.get("prompt_tokens"),
                             usage.get("completion_tokens"), logprobs.mean),
                ttft_ms=ttft_ms, error_kind=error_kind,
            )  # fmt: skip
            logged = True
            pending.append(self._durable(record))
            try:
                await self._all_durable(pending)
            except ApiError as exc:
                yield _sse(exc.body())
                return
            self.metrics.answered(
                call.label, version, arm, status, time.perf_counter() - call.started,
                record.prompt_tokens, record.completion_tokens, ttft_ms / 1000,
            )  # fmt: skip
            if status == 200:
                yield SSE_DONE
        finally:
            await stream.aclose()
            if not logged:  # the client went away mid-stream: still one answer row, not awaited
                text = "".join(parts)
                record = replace(
                    self._record(call, 499, version, arm, text, None, None, None),
                    ttft_ms=ttft_ms, error_kind="client_disconnected",
                )  # fmt: skip
                self.writer.submit(record)

    # -- shared pieces -------------------------------------------------------------------------

    async def _upstream(self, call: _Call, version: str) -> Upstream:
        """The upstream of ``version`` (a pinned version is looked up in the registry once)."""
        cached = self.tables.cached_upstream(call.model, version)
        if cached is not None:
            return cached
        try:
            return await asyncio.to_thread(self.tables.load_upstream, call.model, version)
        except VersionNotFoundError as exc:
            raise self._not_found(f"{call.model}/{version}") from exc
        except UnservableVersion as exc:
            raise UpstreamFailure("unservable_version", str(exc)) from exc

    def _record(
        self, call: _Call, status: int, version: str | None, arm: str | None, text: str, refusal: object,
        prompt_tokens: int | None, completion_tokens: int | None, mean_logprob: float | None = None,
    ) -> RequestRecord:  # fmt: skip
        ok = status == 200
        return RequestRecord(
            request_id=call.request_id,
            model=call.model,
            at=call.at,
            status_code=status,
            latency_ms=call.elapsed_ms(),
            version=version,
            arm=arm,
            user_key_hash=call.user_key_hash,
            prompt_text=call.prompt_text,
            response_text=text if self.options.capture_text and ok else None,
            prompt_chars=call.prompt_chars,
            response_chars=len(text),
            prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
            completion_tokens=completion_tokens if isinstance(completion_tokens, int) else None,
            streamed=call.stream,
            format_ok=format_ok(text, self.options.answer_format) if ok else None,
            refusal=is_refusal(text, refusal) if ok else None,
            mean_logprob=mean_logprob if ok else None,
        )

    def _durable(self, record: RequestRecord) -> Awaitable[None]:
        return asyncio.wrap_future(self.writer.submit(record))

    async def _all_durable(self, pending: list[Awaitable[None]]) -> None:
        """Wait until every record of this request is on disk; refuse to answer if one is not."""
        try:
            for future in pending:
                await future
        except StoreError as exc:
            log.error("request log write failed: %s", exc.one_line())
            raise ApiError(
                "The gateway could not record this request; it was not answered. Retry shortly.",
                status_code=503, type="server_error", code="request_log_unavailable",
            ) from exc  # fmt: skip
        finally:
            pending.clear()

    def _log_failover(self, call: _Call, route: Route, exc: UpstreamFailure) -> Awaitable[None]:
        self.metrics.failed(call.label, route.version, route.arm, exc.kind)
        self.metrics.failovers.labels(call.label, route.version).inc()
        record = replace(
            self._record(call, exc.status_code, route.version, route.arm, "", None, None, None),
            role="failover", error_kind=exc.kind,
        )  # fmt: skip
        return self._durable(record)

    async def _upstream_error(
        self, call: _Call, version: str, arm: str, exc: UpstreamFailure, pending: list[Awaitable[None]]
    ) -> Response:
        self.metrics.failed(call.label, version, arm, exc.kind)
        error = ApiError(exc.message, status_code=exc.status_code, type="server_error", code=exc.kind)
        return await self._refuse(call, error, version, arm, pending)

    async def _rejected(
        self, call: _Call, version: str, arm: str, exc: UpstreamRejected, pending: list[Awaitable[None]]
    ) -> Response:
        code = exc.body["error"].get("code")
        record = replace(
            self._record(call, exc.status_code, version, arm, "", None, None, None),
            error_kind=str(code or "upstream_rejected")[:64],
        )  # fmt: skip
        pending.append(self._durable(record))
        try:
            await self._all_durable(pending)
        except ApiError as error:
            return Response(orjson.dumps(error.body()), status_code=503, media_type="application/json")
        self.metrics.answered(
            call.label, version, arm, exc.status_code, time.perf_counter() - call.started, None, None
        )
        return Response(
            orjson.dumps(exc.body), status_code=exc.status_code, media_type="application/json",
            headers=self._headers(call, version, arm),
        )  # fmt: skip

    async def _refuse(
        self, call: _Call, error: ApiError, version: str | None = None, arm: str | None = None,
        pending: list[Awaitable[None]] | None = None,
    ) -> Response:  # fmt: skip
        """Answer with an OpenAI error and log it as the request's answer row."""
        status = error.status_code or 400
        record = replace(
            self._record(call, status, version, arm, "", None, None, None),
            error_kind=error.code or error.type,
        )
        waits = [*(pending or []), self._durable(record)]
        try:
            await self._all_durable(waits)
        except ApiError as failure:
            error, status = failure, 503
        self.metrics.answered(
            call.label, version or "", arm or "", status, time.perf_counter() - call.started, None, None
        )
        headers = {REQUEST_ID_HEADER: call.request_id}
        if version is not None and arm is not None:
            headers = self._headers(call, version, arm)
        return Response(
            orjson.dumps(error.body()), status_code=status, media_type="application/json", headers=headers
        )

    @staticmethod
    def _headers(call: _Call, version: str, arm: str) -> dict[str, str]:
        return {VERSION_HEADER: version, ARM_HEADER: arm, REQUEST_ID_HEADER: call.request_id}

    def _maybe_shadow(self, call: _Call, body: dict[str, Any], route: Route) -> None:
        if route.shadow is None:
            return
        task = asyncio.create_task(self._shadow(call, body, route.shadow))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _shadow(self, call: _Call, body: dict[str, Any], version: str) -> None:
        """Send a copy to the shadow version; its answer is logged, never shown."""
        shadow = _Call(call.request_id, time.perf_counter(), call.model, call.label, call.user_key_hash,
                       call.prompt_text, call.prompt_chars, False)  # fmt: skip
        plain = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        try:
            logprobs = LogprobCapture.of(plain, self.options.capture_logprobs)
            answer = await self._ask(await self._upstream(shadow, version), plain, logprobs)
        except (UpstreamFailure, UpstreamRejected, ApiError) as exc:
            status = getattr(exc, "status_code", 502) or 502
            kind = getattr(exc, "kind", None) or getattr(exc, "code", None) or "upstream_rejected"
            self.metrics.failed(call.label, version, "shadow", str(kind))
            record = replace(self._record(shadow, status, version, "shadow", "", None, None, None),
                             role="shadow", error_kind=str(kind))  # fmt: skip
        else:
            text, refusal = _message(answer)
            prompt_tokens, completion_tokens = _usage(answer)
            record = replace(
                self._record(shadow, 200, version, "shadow", text, refusal, prompt_tokens, completion_tokens,
                             mean_logprob(answer)),
                role="shadow",
            )  # fmt: skip
        self.writer.submit(record)

    async def drain(self) -> None:
        """Wait for shadow copies still in flight (at shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


async def _chain(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for event in rest:
        yield event
