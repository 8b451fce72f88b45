"""A real HTTP server speaking OpenAI's ``/v1/chat/completions`` and ``/v1/models``.

For tests and benchmarks of anything that calls models: fixed latency, canned or echo answers
(or any function of model and messages), streaming the way OpenAI streams (``stream: true``: SSE
chunks, a role chunk, one chunk per word, a finish chunk, a usage chunk when
``stream_options.include_usage``, then ``data: [DONE]``), and fault injection (a share of 429
with Retry-After and of 500 responses, or requests that always fail). Standard library only,
apart from tuneops' wire module (errors and auth exactly as the real servers answer them);
``ThreadingHTTPServer`` with Nagle's algorithm off, otherwise small responses wait ~40 ms for a
delayed ACK.

Usage::

    with running_chat_stub(latency_s=0.1, answer=echo_answer) as stub:
        client = AsyncOpenAI(base_url=stub.base_url, api_key="test")
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tuneops.serving.openai_wire import ApiError, bearer_key_accepted, error_body, parse_json, unknown_url

Messages = list[dict[str, Any]]
AnswerFn = Callable[[str, Messages], str]
LogprobFn = Callable[[str, str], float]  # (model, token) -> the token's log-probability


def echo_answer(model: str, messages: Messages) -> str:
    """Answer with the last user message (a model that repeats the question)."""
    users = [m.get("content") or "" for m in messages if m.get("role") == "user"]
    return str(users[-1]) if users else ""


def canned_answers(answers: dict[str, str], default: str = "I do not know.") -> AnswerFn:
    """Answer from a table keyed by the last user message."""

    def answer(model: str, messages: Messages) -> str:
        return answers.get(echo_answer(model, messages), default)

    return answer


@dataclass
class StubConfig:
    """What the stub does; mutable so a test can change behaviour while it runs.

    Attributes:
        answer: text of the reply, from model id and messages.
        latency_s: fixed delay before every response.
        share_429: share of requests answered 429 with ``Retry-After: retry_after_s``.
        share_500: share of requests answered 500.
        retry_after_on_500: send ``Retry-After`` with 500 responses too (as some gateways do).
        max_faults_per_request: at most this many injected 429/500 for the same request (same model
            and messages), so faults are transient and a client with enough retries always gets
            through, whatever order concurrent requests arrive in. None: no limit.
        always_fail: requests for which this returns True always get a 500.
        models: ids listed by ``/v1/models`` (any id is accepted by chat completions).
        seed: seeds the fault injection, so a run is reproducible.
        api_key: when set, requests must carry ``Authorization: Bearer <api_key>``.
        logprob: when set, a request with ``logprobs: true`` gets each token's (a word, with its
            leading space, as streamed) log-probability from it; otherwise ``logprobs`` is null.
        refuses_logprobs: models for which this returns True answer ``logprobs: true`` with the 400
            OpenAI's reasoning models give (``param: logprobs``).
    """

    answer: AnswerFn = echo_answer
    latency_s: float = 0.0
    share_429: float = 0.0
    share_500: float = 0.0
    retry_after_s: float = 0.01
    retry_after_on_500: bool = False
    max_faults_per_request: int | None = None
    always_fail: Callable[[str, Messages], bool] | None = None
    models: Sequence[str] = ("stub-model",)
    seed: int = 0
    api_key: str | None = None
    logprob: LogprobFn | None = None
    refuses_logprobs: Callable[[str], bool] | None = None


@dataclass
class StubStats:
    """What the stub saw: requests by status and by model (thread-safe counters)."""

    statuses: Counter[int] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: int, model: str) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.models[model] += 1

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


def _error_body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> bytes:
    return json.dumps(error_body(message, type=kind, code=code)).encode()


def _not_found(method: str, path: str) -> bytes:
    return json.dumps(unknown_url(method, path).body()).encode()


class _Handler(BaseHTTPRequestHandler):
    server: _StubServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging (thousands of lines in a benchmark)."""

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        key = self.server.config.api_key
        if bearer_key_accepted(self.headers.get("Authorization"), [key] if key is not None else []):
            return True
        self._send(401, _error_body("Incorrect API key provided", code="invalid_api_key"))
        return False

    def do_GET(self) -> None:
        if not self._authorised():
            return
        if self.path.rstrip("/").endswith("/models"):
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "tuneops-stub"}
                for m in self.server.config.models
            ]
            self._send(200, json.dumps({"object": "list", "data": data}).encode())
        else:
            self._send(404, _not_found("GET", self.path))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self._authorised():
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, _not_found("POST", self.path))
            return
        try:
            request = parse_json(raw)
            model = str(request["model"])
            messages = list(request["messages"])
        except ApiError as exc:
            self._send(exc.status_code or 400, json.dumps(exc.body()).encode())
            return
        except (KeyError, TypeError):
            self._send(400, _error_body("body must be a JSON object with model and messages"))
            return
        config = self.server.config
        if config.latency_s:
            time.sleep(config.latency_s)
        refuses = config.refuses_logprobs
        if request.get("logprobs") is True and refuses is not None and refuses(model):
            self.server.stats.record(400, model)
            message = "logprobs is not supported with this model."
            body = error_body(message, param="logprobs", code="unsupported_parameter")
            self._send(400, json.dumps(body).encode())
            return
        fault = self.server.draw_fault(model, messages)
        if fault == 429:
            self.server.stats.record(429, model)
            self._send(429, _error_body("Rate limit reached, retry later", "requests", "rate_limit_exceeded"),
                       {"Retry-After": f"{config.retry_after_s:g}"})  # fmt: skip
            return
        if fault == 500:
            self.server.stats.record(500, model)
            headers = {"Retry-After": f"{config.retry_after_s:g}"} if config.retry_after_on_500 else None
            self._send(500, _error_body("The server had an error", "server_error"), headers)
            return
        text = config.answer(model, messages)
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)
        completion_tokens = len(text.split())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        tokens = _tokens(text)
        scores = config.logprob if request.get("logprobs") is True else None
        if request.get("stream") is True:
            options = request.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            self._stream(model, tokens, usage if include_usage else None, scores)
            self.server.stats.record(200, model)
            return
        body = {
            "id": f"chatcmpl-stub-{self.server.next_id()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": _logprobs(model, tokens, scores),
                }
            ],
            "usage": usage,
        }
        self.server.stats.record(200, model)
        self._send(200, json.dumps(body).encode())

    def _stream(
        self, model: str, tokens: list[str], usage: dict[str, int] | None, scores: LogprobFn | None
    ) -> None:
        """Answer as OpenAI streams: ``text/event-stream`` in chunked transfer encoding."""
        base = {"id": f"chatcmpl-stub-{self.server.next_id()}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model}  # fmt: skip

        def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
            return {**base, "choices": [choice]}

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": t}, logprobs=_logprobs(model, [t], scores)) for t in tokens]
        events.append(chunk({}, "stop"))
        if usage is not None:
            events.append({**base, "choices": [], "usage": usage})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        payload = [f"data: {json.dumps(event)}\n\n".encode() for event in events] + [b"data: [DONE]\n\n"]
        for data in payload:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _tokens(text: str) -> list[str]:
    """The stub's tokens: words, each after the first with its leading space (how it streams)."""
    return [word if i == 0 else " " + word for i, word in enumerate(text.split(" "))]


def _logprobs(model: str, tokens: list[str], scores: LogprobFn | None) -> dict[str, Any] | None:
    """A choice's ``logprobs`` in OpenAI's shape, or None when not asked (or not configured)."""
    if scores is None:
        return None
    content = [
        {"token": t, "logprob": scores(model, t), "bytes": list(t.encode()), "top_logprobs": []}
        for t in tokens
    ]
    return {"content": content, "refusal": None}


class _StubServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], config: StubConfig) -> None:
        super().__init__(address, _Handler)
        self.config = config
        self.stats = StubStats()
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()
        self._counter = 0
        self._faults: Counter[str] = Counter()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-response (it gave up, or was closed) is not a stub error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def next_id(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def draw_fault(self, model: str, messages: Messages) -> int | None:
        config = self.config
        if config.always_fail is not None and config.always_fail(model, messages):
            return 500
        key = json.dumps([model, messages], sort_keys=True)
        with self._lock:
            draw = self._rng.random()
            if config.max_faults_per_request is not None:
                if self._faults[key] >= config.max_faults_per_request:
                    return None
                if draw < config.share_429 + config.share_500:
                    self._faults[key] += 1
        if draw < config.share_429:
            return 429
        if draw < config.share_429 + config.share_500:
            return 500
        return None


@dataclass
class ChatStub:
    """A running stub: where it listens, its (mutable) config, and what it has seen."""

    server: _StubServer

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def config(self) -> StubConfig:
        return self.server.config

    @property
    def stats(self) -> StubStats:
        return self.server.stats


@contextmanager
def running_chat_stub(config: StubConfig | None = None, **options: Any) -> Iterator[ChatStub]:
    """Serve a stub on 127.0.0.1 (a free port) in a background thread for the ``with`` block.

    Args:
        config: the behaviour; or pass ``StubConfig`` fields as keyword arguments.
    """
    server = _StubServer(("127.0.0.1", 0), config or StubConfig(**options))
    thread = threading.Thread(target=server.serve_forever, name="chat-stub", daemon=True)
    thread.start()
    try:
        yield ChatStub(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the stub in its own process (benchmarks): ``python -m tuneops.testing.chat_stub``.

    Prints ``listening on <base_url>`` once ready, then serves until interrupted.
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--share-429", type=float, default=0.0)
    parser.add_argument("--share-500", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = StubConfig(
        latency_s=args.latency_ms / 1000, share_429=args.share_429, share_500=args.share_500, seed=args.seed
    )
    server = _StubServer(("127.0.0.1", args.port), config)
    host, port = server.server_address[:2]
    print(f"listening on http://{host!s}:{port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
