"""The chat route without FastAPI's machinery: the gateway's hot path.

Measured under the gateway benchmark (``bench/gateway_bench.py``, concurrency 64), FastAPI's
per-request work around the chat route (dependency solving, cookie and header parsing, three
layers of exception middleware) held the GIL longer than the route itself. The chat route needs
none of it: it reads the raw body, one header, and returns a ready Starlette response that
already carries its OpenAI-shaped errors. So :class:`ChatFastPath` sends ``POST
/v1/chat/completions`` straight to it and everything else (models, feedback, health, metrics,
the webhook, the lifespan) to the FastAPI app as before. The key and body-size guard still wraps
both, so authentication and limits are unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from tuneops.serving.openai_wire import (
    ApiError,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    error_body,
    send_error,
)

log = logging.getLogger("tuneops.serving.gateway")

CHAT_PATH = "/v1/chat/completions"

ChatRoute = Callable[[Request], Awaitable[Response]]


class ChatFastPath:
    """ASGI: ``POST /v1/chat/completions`` to ``chat`` directly, every other request to ``app``."""

    def __init__(self, app: ASGIApp, chat: ChatRoute) -> None:
        self.app = app
        self.chat = chat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CHAT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            response = await self.chat(Request(scope, receive))
            await response(scope, receive, tracking_send)
        except ApiError as exc:  # a body over the guard's limit, raised while it was read
            if not started:
                await send_error(send, exc.status_code or 400, exc.body())
        except Exception:  # FastAPI's ServerErrorMiddleware did this for the chat route before
            log.exception("chat completion failed")
            if not started:
                message = "The gateway failed to answer this request; it has been logged."
                await send_error(send, 500, error_body(message, type="server_error"))
