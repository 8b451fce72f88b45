"""Reaching a model version's upstream: which endpoint serves it, and one forwarded attempt.

A version's tags say *what* to ask for (``tuneops.endpoint_model``) and which provider kind
serves it (``tuneops.provider``); *where* and *with which key* come from the spec's provider
section and the settings (:func:`tuneops.providers.resolve_endpoint`), never from tags, so a tag
can neither carry a secret nor send one elsewhere.

Every upstream failure worth failing over from (connection refused, timeout, 5xx, 429, a body
that is not an OpenAI answer) is an :class:`UpstreamFailure` raised *before any byte reached the
client*; a 4xx about the request itself is an :class:`UpstreamRejected` passed through as is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import orjson

from tuneops.providers import ProviderEndpoint, resolve_endpoint
from tuneops.registry.conventions import TAG_ENDPOINT_MODEL, TAG_PROVIDER
from tuneops.serving.gateway.plainhttp import PlainHttpClient, ProtocolError
from tuneops.spec import LocalProviderConfig, OpenAIProviderConfig

if TYPE_CHECKING:
    from tuneops.registry.types import RegisteredVersion
    from tuneops.settings import TuneopsSettings
    from tuneops.spec import ProviderConfig

POOL_SIZE = 64


class UnservableVersion(Exception):
    """A registered version the gateway cannot reach: a tag is missing or its provider is unknown."""


@dataclass(frozen=True)
class Upstream:
    """Where one model version is answered: the endpoint and the model id to ask it for."""

    model: str
    version: str
    provider: str
    endpoint_model: str
    base_url: str
    api_key: str | None = field(repr=False)
    azure: bool = False

    @property
    def url(self) -> str:
        return f"{self.base_url.rstrip('/')}/chat/completions"

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
            if self.azure:
                headers["api-key"] = self.api_key
        return headers


def provider_endpoints(provider: ProviderConfig, settings: TuneopsSettings) -> dict[str, ProviderEndpoint]:
    """The endpoint of each provider kind a version may name: the spec's, plus the defaults.

    A version registered with another kind than the spec's (say, an OpenAI fine-tune in a project
    now on the local service) is reached at that kind's default address with the settings' key;
    Azure has no default address, so only the spec can name it.
    """
    endpoints = {
        "local": resolve_endpoint(LocalProviderConfig(), settings),
        "openai": resolve_endpoint(OpenAIProviderConfig(kind="openai"), settings),
    }
    endpoints[provider.kind] = resolve_endpoint(provider, settings)
    return endpoints


def upstream_for(version: RegisteredVersion, endpoints: Mapping[str, ProviderEndpoint]) -> Upstream:
    """The upstream of a registered version, from its tags and the configured endpoints."""
    endpoint_model = version.tags.get(TAG_ENDPOINT_MODEL)
    provider = version.tags.get(TAG_PROVIDER)
    where = f"{version.model_name}/{version.version}"
    if not endpoint_model or not provider:
        raise UnservableVersion(f"version {where} has no {TAG_ENDPOINT_MODEL}/{TAG_PROVIDER} tags")
    endpoint = endpoints.get(provider)
    if endpoint is None:
        raise UnservableVersion(
            f"version {where} is served by provider {provider!r}, which the project's spec does not configure"
        )
    return Upstream(
        model=version.model_name,
        version=version.version,
        provider=provider,
        endpoint_model=endpoint_model,
        base_url=endpoint.base_url,
        api_key=endpoint.api_key or (endpoint.require_key() if endpoint.is_local else None),
        azure=endpoint.client_kind == "azure",
    )


SHARDS = 8


def make_client(
    timeout_seconds: float,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    connections: int = POOL_SIZE * 2,
    keepalive: int = POOL_SIZE,
) -> httpx.AsyncClient:
    """An upstream client: keep-alive, a bounded pool, the spec's timeout."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0)),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=keepalive),
        transport=transport,
        trust_env=False,  # upstreams are addressed directly, never through an ambient proxy
    )


@dataclass(frozen=True)
class PlainClients:
    """The clients of plain completions: ``http`` for plain-HTTP upstreams, aiohttp for the rest."""

    http: PlainHttpClient
    session: aiohttp.ClientSession


class ClientPool:
    """``SHARDS`` upstream clients taken in turn, together keeping ``POOL_SIZE`` connections alive.

    httpcore's pool re-examines every connection it holds whenever a request starts or ends
    (``has_expired`` polls each socket, and the idle count is recomputed per connection), so one
    pool of 64 keep-alive connections costs O(64) to O(64²) work per request: profiled at
    concurrency 64 it held the event loop ~70% of the time and capped the gateway near 80 rps.
    Eight pools of 8 connections do the same job at an eighth of the work or less.
    """

    def __init__(
        self, timeout_seconds: float, transport: httpx.AsyncBaseTransport | None = None, shards: int = SHARDS
    ) -> None:
        self._clients: list[httpx.AsyncClient] = [
            make_client(
                timeout_seconds,
                transport,
                connections=max(2, POOL_SIZE * 2 // shards),
                keepalive=max(1, POOL_SIZE // shards),
            )
            for _ in range(shards)
        ]
        self._next = 0
        self._timeout, self._transport = timeout_seconds, transport
        self._plain: PlainClients | None = None

    def plain(self) -> httpx.AsyncClient | PlainClients:
        """The client for plain (non-streaming) completions: one aiohttp session, the hot path.

        aiohttp's pool costs O(1) per request and its client ~half of httpx's CPU per request
        (profiled: httpx was ~70% of the event loop's time at concurrency 64). Streams keep httpx
        (line iteration with failover before the first byte). An injected httpx transport (tests)
        routes everything through httpx.
        """
        if self._transport is not None:
            return self.take()
        if self._plain is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=POOL_SIZE * 2, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=self._timeout, sock_connect=min(self._timeout, 10.0)),
                trust_env=False,  # upstreams are addressed directly, never through an ambient proxy
                skip_auto_headers=("User-Agent",),
            )
            self._plain = PlainClients(PlainHttpClient(self._timeout, limit_per_host=POOL_SIZE * 2), session)
        return self._plain

    def take(self) -> httpx.AsyncClient:
        """The client for the next request (round robin)."""
        client = self._clients[self._next]
        self._next = (self._next + 1) % len(self._clients)
        return client

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
        if self._plain is not None:
            await self._plain.http.aclose()
            await self._plain.session.close()


class UpstreamFailure(Exception):
    """The upstream failed before anything was sent to the client: fail over, or answer 502/504."""

    def __init__(self, kind: str, message: str, status_code: int = 502) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status_code = status_code


class UpstreamRejected(Exception):
    """The upstream refused the request itself (a 4xx other than 429): the client gets it as is."""

    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        super().__init__(f"upstream answered {status_code}")
        self.status_code = status_code
        self.body = body


def _is_error_body(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("error"), dict)


def _classify(status: int, raw: bytes) -> Exception:
    """An upstream answer other than 200 as the exception the caller acts on."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if 400 <= status < 500 and status != 429 and _is_error_body(body):
        return UpstreamRejected(status, body)
    kind = "upstream_rate_limited" if status == 429 else "upstream_error"
    return UpstreamFailure(kind, f"the model's upstream answered HTTP {status}")


def _transport_failure(exc: httpx.HTTPError) -> UpstreamFailure:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamFailure("upstream_timeout", "the model's upstream did not answer in time", 504)
    return UpstreamFailure(
        "upstream_unreachable", f"the model's upstream cannot be reached ({type(exc).__name__})"
    )


async def complete(
    client: httpx.AsyncClient | PlainClients, upstream: Upstream, body: dict[str, Any]
) -> dict[str, Any]:
    """One non-streaming chat completion from ``upstream``; the answer as parsed JSON."""
    payload = orjson.dumps({**body, "model": upstream.endpoint_model})
    if isinstance(client, PlainClients) and upstream.url.startswith("http://"):
        try:
            status, raw = await client.http.post(upstream.url, payload, upstream.headers())
        except TimeoutError as exc:
            raise UpstreamFailure(
                "upstream_timeout", "the model's upstream did not answer in time", 504
            ) from exc
        except (OSError, ProtocolError) as exc:  # ConnectionError is an OSError
            raise UpstreamFailure(
                "upstream_unreachable", f"the model's upstream cannot be reached ({type(exc).__name__})"
            ) from exc
    elif isinstance(client, PlainClients):
        try:
            async with client.session.post(upstream.url, data=payload, headers=upstream.headers()) as reply:
                status, raw = reply.status, await reply.read()
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors (ServerTimeoutError too)
            raise UpstreamFailure(
                "upstream_timeout", "the model's upstream did not answer in time", 504
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(
                "upstream_unreachable", f"the model's upstream cannot be reached ({type(exc).__name__})"
            ) from exc
    else:
        try:
            response = await client.post(upstream.url, content=payload, headers=upstream.headers())
        except httpx.HTTPError as exc:
            raise _transport_failure(exc) from exc
        status, raw = response.status_code, response.content
    if status != 200:
        raise _classify(status, raw)
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamFailure(
            "upstream_garbage", "the model's upstream sent a body that is not JSON"
        ) from exc
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        raise UpstreamFailure("upstream_garbage", "the model's upstream sent no chat completion")
    return answer


class UpstreamStream:
    """An open upstream SSE stream whose first event has arrived (so failing over is still possible)."""

    def __init__(self, response: httpx.Response, lines: AsyncIterator[str], first: dict[str, Any]) -> None:
        self.response = response
        self._lines = lines
        self.first = first

    async def rest(self) -> AsyncIterator[dict[str, Any]]:
        """The events after the first, up to ``[DONE]``; a broken stream raises UpstreamFailure."""
        while (event := await _next_event(self._lines)) is not None:
            yield event

    async def aclose(self) -> None:
        await self.response.aclose()


async def _next_event(lines: AsyncIterator[str]) -> dict[str, Any] | None:
    """The next ``data:`` event as JSON; None at ``[DONE]``. A stream cut short is a failure."""
    try:
        async for line in lines:
            if not line.startswith("data:"):
                continue  # blank separators, comments, event names
            data = line[5:].strip()
            if data == "[DONE]":
                return None
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise UpstreamFailure(
                    "upstream_garbage", "the model's upstream sent a malformed event"
                ) from exc
            if not isinstance(event, dict) or _is_error_body(event):
                raise UpstreamFailure("upstream_error", "the model's upstream reported an error mid-stream")
            return event
    except httpx.HTTPError as exc:
        raise _transport_failure(exc) from exc
    raise UpstreamFailure("upstream_garbage", "the model's upstream ended the stream without [DONE]")


async def open_stream(client: httpx.AsyncClient, upstream: Upstream, body: dict[str, Any]) -> UpstreamStream:
    """Start a streaming completion and wait for its first event (usage always requested)."""
    given = body.get("stream_options")
    options: dict[str, Any] = given if isinstance(given, dict) else {}
    payload = orjson.dumps(
        {**body, "model": upstream.endpoint_model, "stream_options": {**options, "include_usage": True}}
    )
    request = client.build_request("POST", upstream.url, content=payload, headers=upstream.headers())
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise _transport_failure(exc) from exc
    try:
        if response.status_code != 200:
            raise _classify(response.status_code, await response.aread())
        lines = response.aiter_lines()
        first = await _next_event(lines)
        if first is None:
            raise UpstreamFailure("upstream_garbage", "the model's upstream sent an empty stream")
    except httpx.HTTPError as exc:
        await response.aclose()
        raise _transport_failure(exc) from exc
    except BaseException:
        await response.aclose()
        raise
    return UpstreamStream(response, lines, first)
