"""The gateway's HTTP face: OpenAI's chat route, the model list, feedback, health and metrics.

:class:`Gateway` ties the parts together for one process: the routing tables and their refresher
(every ``serving.refresh_seconds``, at once on ``POST /v1/routing/refresh`` or a signed MLflow
webhook), the one shared upstream client, the request log writer (opened and closed by the
caller, who owns the spool), and a Prometheus registry of its own. ``Gateway.asgi()`` is what
uvicorn serves: the app behind the bearer-key and body-size guard (``/health`` and ``/metrics``
stay open; the webhook path checks MLflow's HMAC signature instead of a key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tuneops.providers import ProviderEndpoint
from tuneops.registry.ledger import Ledger
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.requestlog import RequestLog, RequestSink
from tuneops.routing_state import RoutingState
from tuneops.serving.gateway.chat import ChatCompletions, ChatOptions
from tuneops.serving.gateway.fastpath import ChatFastPath
from tuneops.serving.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from tuneops.serving.gateway.supervisor import LocalServiceSupervisor, serves_local
from tuneops.serving.gateway.table import RoutingTables
from tuneops.serving.gateway.upstreams import ClientPool
from tuneops.serving.openai_wire import (
    OPEN_PATHS,
    ApiError,
    ASGIApp,
    GuardMiddleware,
    install_error_handlers,
    json_body,
)
from tuneops.spec import FormatConfig, ServingConfig

log = logging.getLogger("tuneops.serving.gateway")

WEBHOOK_PATH = "/mlflow-webhook"
MAX_REQUEST_ID = 64


@dataclass(frozen=True)
class GatewayConfig:
    """What one gateway serves and how: the spec's ``serving`` and ``evaluation.format``, the keys.

    Attributes:
        models: the registered model names it serves (``GET /v1/models``).
        api_keys: bearer keys clients must send; empty means no auth.
        webhook_secret: the secret MLflow signs registry webhooks with; None disables the hook.
    """

    models: tuple[str, ...]
    serving: ServingConfig = field(default_factory=ServingConfig)
    answer_format: FormatConfig = field(default_factory=FormatConfig)
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    webhook_secret: str | None = field(default=None, repr=False)


class Gateway:
    """One gateway process's state; :meth:`asgi` is the app to serve."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        store: RegistryStore,
        routing: RoutingState,
        ledger: Ledger,
        request_log: RequestLog,
        writer: RequestSink,
        endpoints: Mapping[str, ProviderEndpoint],
        transport: httpx.AsyncBaseTransport | None = None,
        metrics: GatewayMetrics | None = None,
        local_service: LocalServiceSupervisor | None = None,
    ) -> None:
        self.config = config
        self.request_log, self.writer = request_log, writer
        self.tables = RoutingTables(
            config.models, store=store, routing=routing, ledger=ledger, endpoints=endpoints
        )
        self.metrics = metrics or GatewayMetrics()
        self._transport = transport
        self.local_service = local_service
        self._clients: ClientPool | None = None
        self._wake: asyncio.Event | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._stopping = False
        options = ChatOptions(
            config.serving.capture_text, config.answer_format, config.serving.capture_logprobs
        )
        self.chat = ChatCompletions(
            self.tables, writer, self.metrics, self.client, options, self.plain_client
        )

    def client(self) -> httpx.AsyncClient:
        """An upstream client for one request (clients are sharded; see ``ClientPool``)."""
        if self._clients is None:
            raise RuntimeError("the gateway is not started")
        client: httpx.AsyncClient = self._clients.take()
        return client

    def plain_client(self) -> Any:
        """The client of plain (non-streaming) completions (see ``ClientPool.plain``)."""
        if self._clients is None:
            raise RuntimeError("the gateway is not started")
        return self._clients.plain()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the upstream client, load the routing once, start the local service if it is
        needed (and supervised), start the refresher."""
        self._clients = ClientPool(self.config.serving.upstream_timeout_seconds, self._transport)
        self._wake = asyncio.Event()
        self._stopping = False
        await self._refresh()
        if self.local_service is not None:  # started (and waited for) when a served version needs it
            await self.local_service.start(lambda: serves_local(self.tables), self.metrics)
        self._refresher = asyncio.create_task(self._refresh_loop(), name="gateway-routing-refresh")

    async def stop(self) -> None:
        """Stop refreshing, let shadow copies finish, close the upstream client, stop the local
        service if the gateway started it."""
        self._stopping = True
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.chat.drain()
        if self._clients is not None:
            await self._clients.aclose()
        if self.local_service is not None:
            await self.local_service.stop()

    def refresh_soon(self) -> None:
        """Wake the refresher now (a webhook said an alias moved)."""
        if self._wake is not None:
            self._wake.set()

    async def _refresh(self) -> list[str]:
        changed: list[str] = await asyncio.to_thread(self.tables.refresh)
        self.metrics.refresh_failures.set(self.tables.refresh_failures)
        if self.tables.refreshed_at is not None:
            self.metrics.refreshed_at.set(self.tables.refreshed_at)
        return changed

    async def _refresh_loop(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            # asyncio.timeout, not wait_for: 3.11's wait_for loses a cancel that races the event
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.serving.refresh_seconds):
                    await self._wake.wait()
            if self._stopping:
                return
            self._wake.clear()
            try:
                await self._refresh()
            except Exception:  # the loop must outlive any one failure; the table stays as it was
                self.tables.refresh_failures += 1
                log.exception("routing refresh failed")

    # -- the app -------------------------------------------------------------------------------

    def app(self) -> FastAPI:
        """The FastAPI app (without the guard)."""

        @asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        app = FastAPI(
            title="tuneops gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
        )
        install_error_handlers(app, log)
        app.add_api_route("/v1/chat/completions", self.chat, methods=["POST"])
        app.add_api_route("/v1/models", self._list_models, methods=["GET"])
        app.add_api_route("/v1/models/{model:path}", self._get_model, methods=["GET"])
        app.add_api_route("/v1/feedback", self._feedback, methods=["POST"])
        app.add_api_route("/v1/routing/refresh", self._refresh_route, methods=["POST"])
        app.add_api_route(WEBHOOK_PATH, self._webhook, methods=["POST"])
        app.add_api_route("/health", self._health, methods=["GET"])
        app.add_api_route("/metrics", self._metrics, methods=["GET"])
        return app

    def asgi(self) -> ASGIApp:
        """The app behind the key and size guard: what uvicorn serves."""
        return GuardMiddleware(
            ChatFastPath(self.app(), self.chat),
            api_keys=self.config.api_keys,
            max_request_bytes=self.config.serving.max_request_bytes,
            open_paths=OPEN_PATHS | {WEBHOOK_PATH},
        )

    def _model_entry(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "tuneops"}

    async def _list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": [self._model_entry(name) for name in self.config.models]}

    async def _get_model(self, model: str) -> dict[str, Any]:
        if model not in self.config.models:
            raise ApiError(
                f"The model `{model}` does not exist or you do not have access to it.",
                status_code=404, param="model", code="model_not_found",
            )  # fmt: skip
        return self._model_entry(model)

    async def _feedback(self, request: Request) -> dict[str, Any]:
        body = await json_body(request)
        if not isinstance(body, dict):
            raise ApiError("The request body must be a JSON object.", code="invalid_json")
        request_id, score, comment = body.get("request_id"), body.get("score"), body.get("comment")
        if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID:
            raise ApiError("'request_id' must be the x-request-id of an answer.", param="request_id")
        if (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or math.isnan(score)
            or not 0 <= score <= 1
        ):
            raise ApiError("'score' must be a number between 0 and 1.", param="score")
        if comment is not None and not isinstance(comment, str):
            raise ApiError("'comment' must be a string.", param="comment")
        stored = await asyncio.to_thread(self.request_log.add_feedback, request_id, float(score), comment)
        self.metrics.feedback.inc()
        return {
            "object": "feedback",
            "request_id": stored.request_id,
            "score": stored.score,
            "comment": stored.comment,
            "created_at": int(stored.at.timestamp()),
        }

    async def _refresh_route(self) -> dict[str, Any]:
        changed = await self._refresh()
        return {"object": "routing.refresh", "changed": changed}

    async def _webhook(self, request: Request) -> Response:
        """A signed MLflow registry webhook: refresh (and so reconcile) now rather than in ≤ 2 s."""
        from tuneops.registry.webhooks import verify

        secret = self.config.webhook_secret
        if not secret:
            raise ApiError("Webhooks are not enabled on this gateway.", status_code=404, code="unknown_url")
        problem = verify(secret, request.headers, await request.body())
        if problem is not None:
            raise ApiError(f"Webhook rejected: {problem}.", status_code=401, code="invalid_signature")
        self.refresh_soon()
        return JSONResponse({"status": "accepted"})

    async def _health(self) -> JSONResponse:
        refreshed = self.tables.refreshed_at
        return JSONResponse(
            {
                "status": "ok",
                "models": list(self.config.models),
                "routing_age_seconds": None if refreshed is None else round(time.time() - refreshed, 3),
            }
        )

    async def _metrics(self) -> Response:
        self.metrics.request_log_backlog.set(self.writer.backlog)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)
