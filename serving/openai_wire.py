"""OpenAI's wire conventions, written once for every OpenAI-compatible server tuneops runs or fakes.

The local service, the gateway and the test stubs all answer as OpenAI does: errors as
``{"error": {"message", "type", "param", "code"}}`` with a 4xx/5xx status, a bearer key, cursor
paging with ``after``/``limit``, streams as server-sent events ending in ``data: [DONE]``. One
module keeps the servers and the fakes the SDK is tested against from drifting apart.

The module's top is standard library only, so the stdlib-based stubs import it cheaply: the guard
is plain ASGI (no Starlette needed) and :func:`install_error_handlers` imports FastAPI when called.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from tuneops.errors import ProviderRejectedError, TuneopsError

if TYPE_CHECKING:
    from fastapi import FastAPI

DEFAULT_PAGE = 20
MAX_PAGE = 100
OPEN_PATHS = frozenset({"/health", "/metrics"})
SSE_DONE = "data: [DONE]\n\n"
INVALID_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload.)"
)
# The ASGI interface, spelled out so the guard needs no web framework.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The JSON body OpenAI sends with an error status."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class ApiError(ProviderRejectedError):
    """A request the server refuses, carrying the fields of OpenAI's error object."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 400,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.param = param
        self.code = code
        self.type = type

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI sends for this error."""
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def unknown_url(method: str, path: str) -> ApiError:
    """OpenAI's 404 for a route it does not have."""
    return ApiError(f"Invalid URL ({method} {path})", status_code=404, code="unknown_url")


def parse_json(raw: bytes) -> Any:
    """A request body as JSON, or OpenAI's ``invalid_json`` error."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(INVALID_JSON, code="invalid_json") from exc


def page_params(
    query: Mapping[str, str], *, default: int = DEFAULT_PAGE, maximum: int = MAX_PAGE
) -> tuple[str | None, int]:
    """``after`` and ``limit`` of a list request, the limit checked as OpenAI checks it."""
    raw = query.get("limit")
    try:
        limit = int(raw) if raw is not None else default
    except ValueError as exc:
        raise ApiError(f"Invalid 'limit': expected an integer, got {raw!r}.", param="limit") from exc
    if not 1 <= limit <= maximum:
        raise ApiError(f"Invalid 'limit': must be between 1 and {maximum}.", param="limit")
    return query.get("after"), limit


def sse_event(data: Mapping[str, Any]) -> str:
    """One server-sent event carrying ``data`` as JSON."""
    return f"data: {json.dumps(data)}\n\n"


def sse_stream(events: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """Frame ``events`` as server-sent events and end the stream the way OpenAI does."""
    for event in events:
        yield sse_event(event)
    yield SSE_DONE


def bearer_key_accepted(authorization: str | bytes | None, keys: Collection[str]) -> bool:
    """True when no key is required, or ``authorization`` is ``Bearer <one of keys>``."""
    if not keys:
        return True
    given = authorization.encode() if isinstance(authorization, str) else authorization or b""
    return _token_accepted(given, tuple(key.encode() for key in keys))


def _token_accepted(given: bytes, keys: tuple[bytes, ...]) -> bool:
    if not given.startswith(b"Bearer "):
        return False
    token, accepted = given[7:], False
    for key in keys:  # compare with every key, matched or not: the time taken says nothing
        accepted |= hmac.compare_digest(token, key)
    return accepted


async def send_error(send: Send, status: int, body: Mapping[str, Any]) -> None:
    """Answer an ASGI request with an error body (what the guard sends before any app runs)."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class GuardMiddleware:
    """Bearer-key auth and a request body size limit, answered in OpenAI's error shape.

    Plain ASGI rather than ``BaseHTTPMiddleware``: cheaper per request, which matters for the
    serving overhead budget. A body larger than announced is cut off by raising ``ApiError`` from
    ``receive``, which the app's error handler turns into the 413.

    Args:
        api_keys: accepted keys; empty means no auth (a gateway holds several, e.g. during rotation).
        max_request_bytes: the body limit of every path not in ``path_limits``.
        path_limits: larger (or smaller) limits for given paths, e.g. file uploads.
        open_paths: paths that need no key (probes and scrapers).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_keys: Collection[str] = (),
        max_request_bytes: int,
        path_limits: Mapping[str, int] | None = None,
        open_paths: Collection[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self.keys = tuple(key.encode() for key in api_keys)
        self.max_request_bytes = max_request_bytes
        self.path_limits = dict(path_limits or {})
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.keys and not _token_accepted(headers.get(b"authorization", b""), self.keys):
            message = "Incorrect API key provided. Pass the service's key as a Bearer token."
            await send_error(send, 401, error_body(message, code="invalid_api_key"))
            return
        limit = self.path_limits.get(scope["path"], self.max_request_bytes)
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            message = f"Request body of {int(length)} bytes exceeds the limit of {limit} bytes."
            await send_error(send, 413, error_body(message, code="request_too_large"))
            return
        seen = 0

        async def limited_receive() -> Message:
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


async def json_body(request: Any) -> Any:
    """The JSON body of a Starlette request, or OpenAI's ``invalid_json`` error."""
    return parse_json(await request.body())


def install_error_handlers(app: FastAPI, log: logging.Logger) -> None:
    """Make every failure of ``app`` an OpenAI error body, never FastAPI's ``detail`` shape.

    ``ApiError`` keeps its status; any other ``TuneopsError`` is a logged 500; FastAPI's
    validation errors are 400s naming the parameter; unknown routes are OpenAI's 404.
    """
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def respond(error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status_code or 400)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return respond(exc)

    @app.exception_handler(TuneopsError)
    async def _tuneops_error(_request: Request, exc: TuneopsError) -> JSONResponse:
        log.error("request failed: %s", exc.one_line())
        return respond(ApiError(exc.one_line(), status_code=500, type="server_error", code="internal_error"))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        message = f"Invalid request: {first.get('msg', 'bad parameters')}"
        return respond(ApiError(message, param=param, code="invalid_value"))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return respond(unknown_url(request.method, request.url.path))
        return respond(ApiError(str(exc.detail), status_code=exc.status_code))
