"""The shipped chat stub (``tuneops.testing.chat_stub``) plus streaming, for the gateway tests.

The stub answers ``stream: true`` with a plain JSON body; the gateway needs a real SSE upstream.
This handler answers streams the way OpenAI does (role chunk, one chunk per word, finish chunk,
usage chunk when ``stream_options.include_usage``, ``[DONE]``) with the stub's own answers and
faults, and hands every other request to the stub's handler unchanged.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tuneops.testing.chat_stub import ChatStub, StubConfig, _Handler, _StubServer


class _StreamingHandler(_Handler):
    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            request = json.loads(raw)
        except ValueError:
            request = None
        if not (isinstance(request, dict) and request.get("stream")):
            rfile, self.rfile = self.rfile, io.BytesIO(raw)  # the stub's handler reads the body itself
            try:
                super().do_POST()
            finally:
                self.rfile = rfile
            return
        if not self._authorised():
            return
        config: StubConfig = self.server.config
        model, messages = str(request["model"]), list(request["messages"])
        if config.latency_s:
            time.sleep(config.latency_s)
        if self.server.draw_fault(model, messages) is not None:
            self.server.stats.record(500, model)
            body = json.dumps({"error": {"message": "stub fault", "type": "server_error"}}).encode()
            self._send(500, body)
            return
        text = config.answer(model, messages)
        words = text.split(" ")
        base = {"id": f"chatcmpl-stub-{self.server.next_id()}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model}  # fmt: skip
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                **base,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
        events.append(chunk({}, "stop"))
        if include_usage:
            prompt = sum(len(str(m.get("content") or "").split()) for m in messages)
            completion = len(text.split())
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            events.append({**base, "choices": [], "usage": usage})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            self._chunk(f"data: {json.dumps(event)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")
        self.server.stats.record(200, model)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


@contextmanager
def running_streaming_stub(**options: Any) -> Iterator[ChatStub]:
    """:func:`tuneops.testing.chat_stub.running_chat_stub` that also streams."""
    server = _StubServer(("127.0.0.1", 0), StubConfig(**options))
    server.RequestHandlerClass = _StreamingHandler
    thread = threading.Thread(target=server.serve_forever, name="chat-stub", daemon=True)
    thread.start()
    try:
        yield ChatStub(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
