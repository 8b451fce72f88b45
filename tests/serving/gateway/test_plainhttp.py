"""The plain-HTTP upstream client against real sockets: a scripted asyncio server and uvicorn."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator

import pytest
import uvicorn
import uvloop

from tuneops.serving.gateway.plainhttp import PlainHttpClient, ProtocolError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


class Scripted:
    """An asyncio server whose ``handler`` answers each connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []

    async def __aenter__(self) -> str:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer, self.connections)
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    async def __aexit__(self, *_: object) -> None:
        self.server.close()


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_content_length_answers_reuse_one_keep_alive_connection() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            head, body = await _read_request(reader)
            server.heads.append(head)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    server = Scripted(echo)

    async def main() -> None:
        async with server as url:
            client = PlainHttpClient(5)
            for i in range(5):
                status, body = await client.post(url, b'{"n": %d}' % i, {"authorization": "Bearer k"})
                assert (status, body) == (200, b'{"n": %d}' % i)
            await client.aclose()

    run(main())
    assert server.connections == 1
    head = server.heads[0].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert "Host: 127.0.0.1:" in head and "authorization: Bearer k" in head and "Content-Length: 8" in head


def test_chunked_answers_split_across_packets_are_reassembled() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await _read_request(reader)
        head = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        for piece in (head + b"4\r\nab", b"cd\r\n3;x=1\r\n", b"efg\r\n0\r\n", b"\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        await _read_request(reader)  # the connection stays usable
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def main() -> None:
        async with Scripted(chunked) as url:
            client = PlainHttpClient(5)
            assert await client.post(url, b"{}", {}) == (201, b"abcdefg")
            assert await client.post(url, b"{}", {}) == (200, b"ok")
            await client.aclose()

    run(main())


def test_a_body_ended_by_close_and_connection_close_are_honoured() -> None:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _read_request(reader)
        if n == 1:
            writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    server = Scripted(closing)

    async def main() -> None:
        async with server as url:
            client = PlainHttpClient(5)
            assert await client.post(url, b"{}", {}) == (200, b"until the end")
            assert await client.post(url, b"{}", {}) == (200, b"ok")
            assert await client.post(url, b"{}", {}) == (200, b"ok")
            await client.aclose()

    run(main())
    assert server.connections == 3  # none of those connections could be reused


def test_a_keep_alive_connection_the_server_closed_while_idle_is_retried_once() -> None:
    async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)  # then close while the client holds it idle

    server = Scripted(answer_then_close)

    async def main() -> None:
        async with server as url:
            client = PlainHttpClient(5)
            assert await client.post(url, b"{}", {}) == (200, b"ok")
            await asyncio.sleep(0.2)
            assert await client.post(url, b"{}", {}) == (200, b"ok")
            await client.aclose()

    run(main())
    assert server.connections == 2


def test_failures_are_connection_timeout_and_protocol_errors() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await _read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        await writer.drain()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    async def main() -> None:
        client = PlainHttpClient(0.5)
        with pytest.raises(ConnectionError):
            await client.post(f"http://127.0.0.1:{closed_port}/v1/chat/completions", b"{}", {})
        async with Scripted(silent) as url:
            with pytest.raises(TimeoutError):
                await client.post(url, b"{}", {})
        async with Scripted(garbage) as url:
            with pytest.raises(ProtocolError):
                await client.post(url, b"{}", {})
        async with Scripted(hang_up) as url:
            with pytest.raises(ConnectionError):
                await client.post(url, b"{}", {})
        with pytest.raises(ValueError, match="plain http"):
            await client.post("https://api.openai.com/v1/chat/completions", b"{}", {})
        await client.aclose()

    run(main())


@pytest.fixture
def uvicorn_echo() -> Iterator[str]:
    """A real uvicorn server (what the local tuning service runs on) echoing JSON bodies."""

    async def app(scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.02)
    yield f"http://127.0.0.1:{port}/v1/chat/completions"
    server.should_exit = True
    thread.join(10)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])  # the gateway runs on uvloop
def test_many_concurrent_posts_to_uvicorn_each_get_their_own_answer(uvicorn_echo: str, loop: str) -> None:
    async def main() -> list[tuple[int, bytes]]:
        client = PlainHttpClient(10, limit_per_host=8)
        replies = await asyncio.gather(*(client.post(uvicorn_echo, b'{"i": %d}' % i, {}) for i in range(200)))
        await client.aclose()
        return replies

    replies = asyncio.run(main()) if loop == "asyncio" else uvloop.run(main())
    assert replies == [(200, b'{"i": %d}' % i) for i in range(200)]
