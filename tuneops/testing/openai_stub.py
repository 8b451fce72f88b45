"""A real HTTP server speaking OpenAI's documented files + fine-tuning protocol, with fault injection.

The real cloud cannot be reached from the machines this project is tested on, and tuneops' own
local service cannot be made to misbehave on cue. This stub can: it answers the documented shapes
of ``/v1/files`` and ``/v1/fine_tuning/jobs`` (create, retrieve, list with ``metadata[k]=v`` and
``after``/``limit`` pagination, events, checkpoints, cancel) and injects faults at the HTTP boundary: 429 with
Retry-After, 500, a connection reset before the request is handled, and a response lost (reset or
held past the client's timeout) *after* a job was created. Jobs advance one phase each time they
are retrieved (validating_files → queued → running, one metrics event and one checkpoint per step →
succeeded), so tests are deterministic without sleeping. ``valid_losses`` scripts the validation
loss of each step (an overfitting run: falling, then rising); the fine-tuned model is the last
step's weights, as on OpenAI.

Usage::

    with OpenAIStubServer(api_key="sk-test") as stub:
        client = OpenAI(base_url=stub.base_url, api_key="sk-test")
        stub.inject("POST", "/fine_tuning/jobs", Fault.lost_after_handling())
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tuneops.serving.openai_wire import (
    ApiError,
    bearer_key_accepted,
    error_body,
    page_params,
    parse_json,
    unknown_url,
)

MAX_LIST_LIMIT = 10_000  # OpenAI's largest page (files); the stub applies it to every list


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour. Build with the class methods."""

    kind: str
    status: int = 500
    retry_after: float | None = None
    delay: float = 0.0

    @classmethod
    def rate_limited(cls, retry_after: float = 1.0) -> Fault:
        """429 with a Retry-After header (whole seconds, as the HTTP spec has it)."""
        return cls("status", status=429, retry_after=retry_after)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """A 5xx answer; the request is not applied."""
        return cls("status", status=status)

    @classmethod
    def connection_reset(cls) -> Fault:
        """The connection is reset before the request is handled (nothing applied)."""
        return cls("reset")

    @classmethod
    def lost_after_handling(cls) -> Fault:
        """The request IS applied (e.g. the job is created), then the connection is reset."""
        return cls("lost_after")

    @classmethod
    def timeout_after_handling(cls, delay: float = 3.0) -> Fault:
        """The request IS applied, then the answer is held ``delay`` s (past the client's timeout)."""
        return cls("delay_after", delay=delay)

    @classmethod
    def hang(cls, delay: float = 60.0) -> Fault:
        """The request is held ``delay`` s, then dropped unhandled (kill a client mid-request)."""
        return cls("hang", delay=delay)


@dataclass
class _Injection:
    method: str
    path: re.Pattern[str]
    fault: Fault
    remaining: int


def _now() -> int:
    return int(time.time())


@dataclass
class StubState:
    """Everything the stub holds; tests read it to count jobs and files."""

    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    file_contents: dict[str, bytes] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    checkpoints: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    progress: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    counter: int = 0

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter:06d}{int(time.time() * 1000) % 100000:05d}"


class OpenAIStubServer:
    """A threaded HTTP server on 127.0.0.1 answering OpenAI's fine-tuning protocol.

    Args:
        api_key: when set, requests must carry it (``Authorization: Bearer``), else 401.
        steps: training steps each job runs (one metrics event per step).
        fail_jobs_with: when set, jobs fail at their first step with this error message.
        hold: when true, jobs stay ``running`` until ``release()`` (crash-point tests).
        organization: the ``organization_id`` jobs report; also the middle of ``ft:`` model names.
        echo_metadata: false makes an OpenAI-compatible server that accepts job ``metadata`` but
            silently drops it (and ignores ``metadata[k]=v`` list filters), as some do.
        valid_losses: the validation loss of each step (default: 1.1 x the training loss);
            ``steps`` defaults to its length when given.
    """

    path_prefix = "/v1"
    queued_status = "queued"

    def __init__(
        self,
        api_key: str | None = None,
        *,
        steps: int = 3,
        fail_jobs_with: str | None = None,
        hold: bool = False,
        organization: str = "org-stub",
        port: int = 0,
        echo_metadata: bool = True,
        valid_losses: list[float] | None = None,
    ) -> None:
        self.api_key = api_key
        self.valid_losses = list(valid_losses) if valid_losses else None
        self.steps = len(valid_losses) if valid_losses and steps == 3 else steps
        self.fail_jobs_with = fail_jobs_with
        self.organization = organization
        self.echo_metadata = echo_metadata
        self.state = StubState()
        self._held = threading.Event()
        if hold:
            self._held.set()
        self._lock = threading.RLock()
        self._injections: list[_Injection] = []
        self._released = threading.Event()
        self._seen = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        port = int(self._server.server_address[1])
        return f"http://127.0.0.1:{port}"

    @property
    def base_url(self) -> str:
        """What to give the OpenAI client as ``base_url``."""
        return self.root_url + self.path_prefix

    def start(self) -> OpenAIStubServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="openai-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._held.clear()
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OpenAIStubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- knobs -----------------------------------------------------------------------------
    def inject(self, method: str, path: str, fault: Fault, times: int = 1) -> None:
        """Make the next ``times`` requests matching ``method`` and ``path`` (a regex, matched
        against the path after the prefix, e.g. ``/fine_tuning/jobs$``) misbehave."""
        with self._lock:
            self._injections.append(_Injection(method.upper(), re.compile(path), fault, times))

    def release(self) -> None:
        """Let held jobs progress again."""
        self._held.clear()

    def hold(self) -> None:
        """Keep jobs from progressing past ``running``."""
        self._held.set()

    def wait_for_request(self, method: str, path: str, timeout: float = 30.0, count: int = 1) -> bool:
        """Block until ``count`` requests matching ``method`` and ``path`` (regex) have arrived."""
        pattern = re.compile(path)

        def seen() -> bool:
            hits = [p for m, p in self.state.requests if m == method.upper() and pattern.search(p)]
            return len(hits) >= count

        with self._seen:
            return self._seen.wait_for(seen, timeout=timeout)

    @property
    def job_count(self) -> int:
        with self._lock:
            return len(self.state.jobs)

    @property
    def file_count(self) -> int:
        with self._lock:
            return len(self.state.files)

    # -- protocol --------------------------------------------------------------------------
    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for injection in self._injections:
                if injection.method == method and injection.path.search(path) and injection.remaining > 0:
                    injection.remaining -= 1
                    return injection.fault
        return None

    def _authorized(self, headers: Any, query: dict[str, list[str]]) -> bool:
        keys = [self.api_key] if self.api_key is not None else []
        return bool(bearer_key_accepted(headers.get("Authorization"), keys))

    def _check_request(self, headers: Any, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]] | None:
        """Protocol checks before routing (auth here; Azure adds ``api-version``)."""
        if not self._authorized(headers, query):
            presented = str(headers.get("Authorization", "")).removeprefix("Bearer ")
            masked = f"{presented[:8]}****{presented[-4:]}" if len(presented) > 12 else "****"
            return 401, error_body(  # worded like OpenAI's, which echoes a masked key
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return None

    def _file_object(self, file_id: str, filename: str, size: int, purpose: str) -> dict[str, Any]:
        return {
            "id": file_id,
            "object": "file",
            "bytes": size,
            "created_at": _now(),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }

    def _new_job(self, body: dict[str, Any]) -> dict[str, Any]:
        hyper = (
            (((body.get("method") or {}).get("supervised") or {}).get("hyperparameters"))
            or body.get("hyperparameters")
            or {}
        )
        return {
            "id": self.state.next_id("ftjob"),
            "object": "fine_tuning.job",
            "created_at": _now(),
            "error": None,
            "fine_tuned_model": None,
            "finished_at": None,
            "hyperparameters": {
                "n_epochs": hyper.get("n_epochs", "auto"),
                "batch_size": hyper.get("batch_size", "auto"),
                "learning_rate_multiplier": hyper.get("learning_rate_multiplier", "auto"),
            },
            "model": body["model"],
            "organization_id": self.organization,
            "result_files": [],
            "status": "validating_files",
            "trained_tokens": None,
            "training_file": body["training_file"],
            "validation_file": body.get("validation_file"),
            "integrations": None,
            "seed": body.get("seed") if body.get("seed") is not None else 42,
            "estimated_finish": None,
            "metadata": body.get("metadata") if self.echo_metadata else None,
            "method": {"type": "supervised"},
            "suffix": body.get("suffix"),
        }

    def _event(
        self, job_id: str, message: str, *, level: str = "info", data: dict[str, Any] | None = None
    ) -> None:
        self.state.events.setdefault(job_id, []).append(
            {
                "object": "fine_tuning.job.event",
                "id": self.state.next_id("ftevent"),
                "created_at": _now(),
                "level": level,
                "message": message,
                "data": data or {},
                "type": "metrics" if data else "message",
            }
        )

    def _advance(self, job: dict[str, Any]) -> None:
        """Move a job one phase on; called on each retrieve so tests never sleep."""
        status, job_id = job["status"], job["id"]
        if status == "validating_files":
            job["status"] = self.queued_status
            self._event(job_id, "Files validated, moving job to queued state")
        elif status in {"queued", "pending"}:
            job["status"] = "running"
            self._event(job_id, "Fine-tuning job started")
        elif status == "running" and not self._held.is_set():
            if self.fail_jobs_with:
                job.update(
                    status="failed",
                    finished_at=_now(),
                    error={"code": "invalid_training_file", "message": self.fail_jobs_with, "param": None},
                )
                self._event(job_id, f"Fine-tuning job failed: {self.fail_jobs_with}", level="error")
                return
            step = self.state.progress.get(job_id, 0) + 1
            self.state.progress[job_id] = step
            train_loss = round(2.0 / step, 4)
            scripted = self.valid_losses
            valid_loss = scripted[min(step, len(scripted)) - 1] if scripted else round(train_loss * 1.1, 4)
            self._event(
                job_id,
                f"Step {step}/{self.steps}: training loss={train_loss}",
                data={
                    "step": step,
                    "total_steps": self.steps,
                    "train_loss": train_loss,
                    "valid_loss": valid_loss,
                    "train_mean_token_accuracy": 0.5,
                },
            )
            model = self._model_name(job)
            self.state.checkpoints.setdefault(job_id, []).append(
                {
                    "object": "fine_tuning.job.checkpoint",
                    "id": self.state.next_id("ftckpt"),
                    "created_at": _now(),
                    "fine_tuned_model_checkpoint": f"{model}:ckpt-step-{step}",
                    "fine_tuning_job_id": job_id,
                    "metrics": {
                        "step": step,
                        "train_loss": train_loss,
                        "valid_loss": valid_loss,
                        "full_valid_loss": valid_loss,
                    },
                    "step_number": step,
                }
            )
            if step >= self.steps:
                job.update(
                    status="succeeded",
                    finished_at=_now(),
                    trained_tokens=1000 * self.steps,
                    fine_tuned_model=model,
                )
                self._event(job_id, "The job has successfully completed")

    def _model_name(self, job: dict[str, Any]) -> str:
        return f"ft:{job['model']}:{self.organization}:{job.get('suffix') or ''}:{job['id'][-8:]}"

    def _paginate(
        self, items: list[dict[str, Any]], query: dict[str, list[str]], default: int
    ) -> dict[str, Any]:
        first = {key: values[0] for key, values in query.items()}
        after, limit = page_params(first, default=default, maximum=MAX_LIST_LIMIT)
        if after is not None:
            ids = [i["id"] for i in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return {"object": "list", "data": page, "has_more": len(items) > limit}

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """Route one request; returns (status, json body, extra headers)."""
        state = self.state
        if method == "POST" and path == "/files":
            fields, files = _multipart(headers.get("Content-Type", ""), body)
            if "file" not in files:
                return 400, error_body("Missing file", param="file"), {}
            filename, content = files["file"]
            file_id = state.next_id("file")
            state.files[file_id] = self._file_object(
                file_id, filename, len(content), fields.get("purpose", "")
            )
            state.file_contents[file_id] = content
            return 200, state.files[file_id], {}
        if method == "GET" and path == "/files":
            items = sorted(state.files.values(), key=lambda f: f["id"], reverse=True)
            if "purpose" in query:
                items = [f for f in items if f["purpose"] == query["purpose"][0]]
            page = self._paginate(items, query, 10000)
            page["first_id"] = page["data"][0]["id"] if page["data"] else None
            page["last_id"] = page["data"][-1]["id"] if page["data"] else None
            return 200, page, {}
        match = re.fullmatch(r"/files/([^/]+)", path)
        if method == "GET" and match:
            found = state.files.get(match.group(1))
            return (200, found, {}) if found else (404, error_body("No such File object"), {})
        if method == "POST" and path == "/fine_tuning/jobs":
            payload = parse_json(body or b"{}")
            problem = self._validate_create(payload)
            if problem:
                return 400, error_body(problem, param="training_file"), {}
            job = self._new_job(payload)
            state.jobs[job["id"]] = job
            self._event(job["id"], f"Created fine-tuning job: {job['id']}")
            return 200, job, {}
        if method == "GET" and path == "/fine_tuning/jobs":
            wanted = {k[len("metadata[") : -1]: v[0] for k, v in query.items() if k.startswith("metadata[")}
            wanted = wanted if self.echo_metadata else {}
            items = [
                j
                for j in sorted(state.jobs.values(), key=lambda j: j["id"], reverse=True)
                if all((j.get("metadata") or {}).get(k) == v for k, v in wanted.items())
            ]
            return 200, self._paginate(items, query, 20), {}
        match = re.fullmatch(r"/fine_tuning/jobs/([^/]+)(/events|/checkpoints|/cancel)?", path)
        if match:
            found_job = state.jobs.get(match.group(1))
            if found_job is None:
                return (
                    404,
                    error_body(f"Could not find fine-tune job {match.group(1)}"),
                    {},
                )
            job = found_job
            action = match.group(2)
            if method == "GET" and action is None:
                self._advance(job)
                return 200, job, {}
            if method == "GET" and action == "/events":
                events = list(reversed(state.events.get(job["id"], [])))
                return 200, self._paginate(events, query, 20), {}
            if method == "GET" and action == "/checkpoints":  # newest first, as OpenAI lists them
                checkpoints = list(reversed(state.checkpoints.get(job["id"], [])))
                page = self._paginate(checkpoints, query, 10)
                page["first_id"] = page["data"][0]["id"] if page["data"] else None
                page["last_id"] = page["data"][-1]["id"] if page["data"] else None
                return 200, page, {}
            if method == "POST" and action == "/cancel":
                if job["status"] not in {"succeeded", "failed", "cancelled"}:
                    job.update(status="cancelled", finished_at=_now())
                    self._event(job["id"], "Fine-tuning job cancelled")
                return 200, job, {}
        return 404, unknown_url(method, path).body(), {}

    def handle_outside(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, Any, dict[str, str]] | None:
        """Requests outside ``path_prefix`` (Azure's management plane); None means 404."""
        return None

    def _validate_create(self, payload: dict[str, Any]) -> str | None:
        if not payload.get("model"):
            return "Missing required parameter: 'model'."
        for name in ("training_file", "validation_file"):
            file_id = payload.get(name)
            if (name == "training_file" or file_id) and file_id not in self.state.files:
                return f"invalid {name}: {file_id}"
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: tests read ``state.requests`` instead."""

            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                query = parse_qs(parts.query, keep_blank_values=True)
                if not parts.path.startswith(stub.path_prefix):
                    with stub._lock:
                        outside = stub.handle_outside(method, parts.path, query, self.headers, body)
                    self._reply(*(outside or (404, unknown_url(method, parts.path).body(), {})))
                    return
                path = parts.path[len(stub.path_prefix) :].rstrip("/") or "/"
                with stub._seen:
                    stub.state.requests.append((method, path))
                    stub._seen.notify_all()
                fault = stub._take_fault(method, path)
                if fault and fault.kind == "reset":
                    self._reset()
                    return
                if fault and fault.kind == "hang":
                    stub._released.wait(fault.delay)
                    self._reset()
                    return
                if fault and fault.kind == "status":
                    extra = {"Retry-After": str(int(fault.retry_after))} if fault.retry_after else {}
                    kind = "rate_limit_exceeded" if fault.status == 429 else "server_error"
                    self._reply(
                        fault.status, error_body(f"injected {fault.status}", type=kind, code=kind), extra
                    )
                    return
                problem = stub._check_request(self.headers, query)
                if problem is not None:
                    self._reply(*problem, {})
                    return
                with stub._lock:
                    try:
                        status, payload, extra = stub.handle(method, path, query, self.headers, body)
                    except ApiError as exc:
                        status, payload, extra = exc.status_code or 400, exc.body(), {}
                if fault and fault.kind == "lost_after":
                    self._reset()
                    return
                if fault and fault.kind == "delay_after":
                    time.sleep(fault.delay)
                    self._reset()
                    return
                self._reply(status, payload, extra)

            def _reply(self, status: int, payload: Any, extra: dict[str, str]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

        return Handler


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """Parse a multipart/form-data body into (fields, files)."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    if not message.is_multipart():
        return fields, files
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        raw = part.get_payload(decode=True)
        payload = raw if isinstance(raw, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            files[str(name)] = (filename, payload)
        elif name is not None:
            fields[str(name)] = payload.decode()
    return fields, files


StubFactory = Callable[..., OpenAIStubServer]
