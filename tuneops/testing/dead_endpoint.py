"""Endpoints that are down, for tests of what a client does when a server cannot answer.

``closed_endpoint()`` is a URL on a port nobody listens on (connection refused).
``silent_endpoint()`` accepts connections and never sends a byte back (a hung server, or a
firewall that swallows the reply): a client waits for its read timeout. It counts the
connections it accepted, so a test can bound a client's attempts.

Usage::

    with silent_endpoint() as dead:
        call(dead.base_url)
    assert dead.connections <= 1
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tuneops.processes import free_port


def closed_endpoint() -> str:
    """An OpenAI-style base URL on 127.0.0.1 whose port refuses connections."""
    return f"http://127.0.0.1:{free_port()}/v1"


@dataclass
class SilentEndpoint:
    """A listening socket that never answers; ``connections`` counts accepted connections."""

    base_url: str
    _held: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._held)


@contextmanager
def silent_endpoint() -> Iterator[SilentEndpoint]:
    """Listen on 127.0.0.1 (a free port) for the ``with`` block; accept, read nothing, answer nothing."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    endpoint = SilentEndpoint(base_url=f"http://127.0.0.1:{server.getsockname()[1]}/v1")
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with endpoint._lock:
                endpoint._held.append(conn)  # kept open: the client sees no reply and no close

    thread = threading.Thread(target=accept, name="silent-endpoint", daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
        with endpoint._lock:
            for conn in endpoint._held:
                conn.close()
