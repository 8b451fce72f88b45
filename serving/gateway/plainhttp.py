"""A keep-alive HTTP/1.1 client for one job: non-streaming POSTs to plain-``http://`` upstreams.

Why not aiohttp here: under the gateway benchmark (concurrency 64, a 50 ms upstream) aiohttp's
request machinery (timeout handles, auto headers, payload writers, the response object) was the
largest share of the gateway's GIL time after FastAPI's. The upstreams a gateway reaches over plain
HTTP are on its own network (the local tuning service, a self-hosted OpenAI-compatible server),
and what it asks of them is one request and one complete response. An :class:`asyncio.Protocol`
per connection that writes a prebuilt request and parses the response in place does that at a
fraction of the cost. Anything else (``https://`` providers: OpenAI, Azure; streams) stays on
aiohttp and httpx.

What it handles: ``Content-Length`` and ``chunked`` bodies and bodies ended by the server closing
the connection; ``Connection: close``; a bounded pool per host; one retry on a fresh connection
when a *reused* keep-alive connection turns out to have been closed by the server before it
answered a byte (the race every keep-alive client has). It raises :class:`ConnectionError` /
:class:`OSError` when the upstream cannot be reached or drops the connection, :class:`TimeoutError`
after ``timeout_seconds`` in all, and :class:`ProtocolError` for a response that is not HTTP/1.x.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024


class ProtocolError(Exception):
    """The upstream's response is not a well-formed HTTP/1.x response."""


class StaleConnection(ConnectionError):
    """A reused connection closed before any byte of the response arrived (safe to retry)."""


class _Response:
    """Incremental parse of one HTTP/1.x response from the bytes a connection receives."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.status: int | None = None
        self.length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.body_start = 0
        self.body = bytearray()  # decoded chunks

    def feed(self, data: bytes) -> bool:
        """Add received bytes; True once the whole response is here."""
        self.buffer += data
        if self.status is None and not self._parse_head():
            return False
        if self.chunked:
            return self._parse_chunks()
        if self.length is not None:
            return len(self.buffer) - self.body_start >= self.length
        return False  # ends when the server closes the connection

    def _parse_head(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise ProtocolError("response head too large")
            return False
        lines = bytes(self.buffer[:end]).split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        self.status = int(parts[1])
        self.keep_alive = parts[0] == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                if not value.isdigit():
                    raise ProtocolError("bad Content-Length")
                self.length = int(value)
            elif name == b"transfer-encoding":
                self.chunked = value.endswith(b"chunked")
            elif name == b"connection":
                self.keep_alive = value != b"close" if self.keep_alive else value == b"keep-alive"
        if self.chunked:
            self.length = None
        elif self.length is None:
            self.keep_alive = False  # the body runs to the connection's end
        if (self.length or 0) > MAX_BODY_BYTES:
            raise ProtocolError("response body too large")
        self.body_start = end + 4
        return True

    def _parse_chunks(self) -> bool:
        while True:
            line_end = self.buffer.find(b"\r\n", self.body_start)
            if line_end < 0:
                return False
            size_text = bytes(self.buffer[self.body_start : line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as exc:
                raise ProtocolError("bad chunk size") from exc
            if size == 0:  # the last chunk: then optional trailers, then a blank line
                return self.buffer.find(b"\r\n\r\n", line_end) >= 0
            data_end = line_end + 2 + size
            if len(self.buffer) < data_end + 2:
                return False
            self.body += self.buffer[line_end + 2 : data_end]
            if len(self.body) > MAX_BODY_BYTES:
                raise ProtocolError("response body too large")
            self.body_start = data_end + 2

    def result(self) -> tuple[int, bytes]:
        assert self.status is not None
        if self.chunked:
            return self.status, bytes(self.body)
        end = None if self.length is None else self.body_start + self.length
        return self.status, bytes(self.buffer[self.body_start : end])


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = False
        self._response: _Response | None = None
        self._done: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass of it

    def data_received(self, data: bytes) -> None:
        if self._response is None or self._done is None or self._done.done():
            self.close()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        try:
            complete = self._response.feed(data)
        except ProtocolError as exc:
            self._done.set_exception(exc)
            self.close()
            return
        if complete:
            self._done.set_result(self._response.result())
            if not self._response.keep_alive:
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        done, response = self._done, self._response
        if done is None or done.done() or response is None:
            return
        if response.status is not None and response.length is None and not response.chunked:
            done.set_result(response.result())  # a body delimited by the connection's end
        elif not response.buffer and self.used:
            done.set_exception(StaleConnection("keep-alive connection closed by the upstream"))
        else:
            done.set_exception(ConnectionError("the upstream closed the connection mid-response"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def request(self, head_and_body: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self._response = _Response()
        self._done = asyncio.get_running_loop().create_future()
        self.transport.write(head_and_body)
        try:
            return await self._done
        finally:
            self.used = True
            self._response = None
            self._done = None


@functools.lru_cache(maxsize=256)
def _request_head(url: str, headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, int], bytes]:
    """Where to connect for ``url``, and its request head up to the ``Content-Length`` value.

    Cached: a gateway sends the same few upstreams the same headers on every request.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"PlainHttpClient only speaks plain http, not {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host = parts.netloc.rsplit("@", 1)[-1]
    head = [f"POST {target} HTTP/1.1", f"Host: {host}"]
    head += [f"{name}: {value}" for name, value in headers if name.lower() != "content-length"]
    head.append("Content-Length: ")
    return (parts.hostname, parts.port or 80), "\r\n".join(head).encode("latin-1")


class PlainHttpClient:
    """Pooled keep-alive connections per ``host:port``; :meth:`post` is one request and its answer."""

    def __init__(self, timeout_seconds: float, *, limit_per_host: int = 128) -> None:
        self.timeout_seconds = timeout_seconds
        self.limit_per_host = limit_per_host
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._slots: dict[tuple[str, int], asyncio.Semaphore] = {}

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """POST ``body`` to ``url`` (``http://`` only); the status and the whole response body."""
        key, head = _request_head(url, tuple(headers.items()))
        message = b"%s%d\r\n\r\n%s" % (head, len(body), body)
        slots = self._slots.setdefault(key, asyncio.Semaphore(self.limit_per_host))
        async with asyncio.timeout(self.timeout_seconds), slots:
            for _attempt in range(2):
                connection = await self._connection(key)
                try:
                    status, raw = await connection.request(message)
                except StaleConnection:
                    continue  # the server closed it while idle; once more on a fresh connection
                except BaseException:
                    connection.close()  # cancelled or timed out mid-request: never reuse it
                    raise
                if not connection.closed:
                    self._idle.setdefault(key, []).append(connection)
                return status, raw
            raise ConnectionError("the upstream closed two connections in a row before answering")

    async def _connection(self, key: tuple[str, int]) -> _Connection:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        _, connection = await asyncio.get_running_loop().create_connection(_Connection, *key)
        return connection

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports' close callbacks run
