"""A local server for Azure OpenAI fine-tuning that checks every request against Microsoft's spec.

This is a *protocol* stub, not Azure. Every request is validated, the way Microsoft's validator
(oav) does, against Microsoft's published REST specifications kept in
``tuneops/testing/reference/azure`` (data-plane authoring ``2025-04-01-preview``, management
``2024-10-01``; MIT, from github.com/Azure/azure-rest-api-specs): undeclared body fields and
query parameters, read-only fields, required fields, types, enums, and the ``api-version``.
Each problem lands in ``violations``; what the server then does is ``unknown_fields``:

- ``"reject"`` (default): answer 400, as a strict server would;
- ``"drop"``: ignore undeclared fields, as a lenient server would (they never come back);
- ``"keep"``: store and echo them (as OpenAI does with ``metadata``).

Answers are projected onto the spec's response schema (undeclared fields removed) except in
``keep`` mode, and checked too (``response_violations``, which keeps the stub honest).

Data plane (``{endpoint}/openai/...``): ``api-key`` header; jobs go ``pending`` → ``running`` →
``succeeded`` (the spec's ``FineTuningState``), some fields null. Events are listed newest first
or oldest first (``event_order``; Microsoft's example lists them oldest first), ``page_size``
caps every page so clients must follow ``after``.

Management plane: ``PUT``/``GET``/``DELETE`` ``/subscriptions/{s}/resourceGroups/{rg}/providers/
Microsoft.CognitiveServices/accounts/{a}/deployments[/{d}]`` with a bearer token; a new deployment
is ``Creating`` and turns ``Succeeded`` after a few GETs; lists page with ``nextLink``.

Inference (``POST {endpoint}/openai/v1/chat/completions``, Azure's "v1" surface, which speaks the
plain OpenAI protocol: ``model`` is a *deployment name*; ``api-key`` header or ``Authorization:
Bearer``). **Not validated against any Microsoft spec**: the vendored files describe fine-tuning
authoring and the deployments resource only, not chat inference, so nothing here is checked the
oav way and nothing is added to ``violations``. What the stub does is Azure's documented
behaviour: a deployment it does not know, or one not yet ``Succeeded``, gets 404
``DeploymentNotFound``; a known one answers in OpenAI's ``CreateChatCompletionResponse`` shape
(tests check that against OpenAI's OpenAPI description, vendored beside the Azure specs) with
the text ``chat_answer`` scripts for it (given the :class:`ServedModel` behind the deployment:
a fine-tune or a base model), so a test decides whether the fine-tune beats its base.
``chat_requests`` records every call. The classic route (what ``AzureOpenAI`` clients call, e.g.
a registered model's), ``POST {endpoint}/openai/deployments/{d}/chat/completions?api-version=``,
answers the same after the data plane's ``api-key`` and ``api-version`` checks; it is not
spec-validated either.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from tuneops.serving.openai_wire import ApiError, bearer_key_accepted, error_body, parse_json, unknown_url
from tuneops.testing.chat_stub import Messages, echo_answer
from tuneops.testing.openai_stub import OpenAIStubServer, _multipart
from tuneops.testing.reference import AZURE_DATA_PLANE, AZURE_MANAGEMENT
from tuneops.testing.reference.swagger import Operation, SwaggerSpec, Violation

UnknownFields = Literal["reject", "drop", "keep"]
EventOrder = Literal["newest-first", "oldest-first"]
_DATA_PLANE = SwaggerSpec(AZURE_DATA_PLANE, "/openai")
_MANAGEMENT = SwaggerSpec(AZURE_MANAGEMENT)
V1_PREFIX = "/openai/v1"
"""Azure OpenAI's v1 inference surface: the OpenAI protocol, ``model`` = deployment name."""
DEPLOYMENT_NOT_FOUND = (  # Azure's wording for a deployment that does not exist (or is not ready)
    "The API deployment for this resource does not exist. If you created the deployment within "
    "the last 5 minutes, please wait a moment and try again."
)


@dataclass(frozen=True)
class ServedModel:
    """What answers behind one deployment (what ``chat_answer`` scripts answers for).

    Attributes:
        deployment: the deployment name (the request's ``model``).
        model: the model it serves (``properties.model.name``): a base model or a fine-tune.
        base_model: for a fine-tune, the model its job trained; otherwise ``model``.
        fine_tuned: whether ``model`` is one of this server's succeeded fine-tunes.
    """

    deployment: str
    model: str
    base_model: str
    fine_tuned: bool


ChatAnswer = Callable[[ServedModel, Messages], str]


def _echo(served: ServedModel, messages: Messages) -> str:
    return echo_answer(served.model, messages)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")


class AzureOpenAIStubServer(OpenAIStubServer):
    """Azure OpenAI's data plane under ``/openai`` plus the deployments management API.

    Args:
        api_key: the ``api-key`` header value the data plane expects.
        bearer_token: the management-plane token expected in ``Authorization: Bearer``.
        creating_polls: GETs a deployment stays ``Creating`` before ``Succeeded``.
        fail_deployments: deployments end ``Failed`` instead.
        unknown_fields: ``reject``, ``drop`` or ``keep`` what the spec does not declare.
        event_order: ``newest-first`` or ``oldest-first``.
        page_size: the most items any list page holds (default: what the client asks).
        chat_answer: the text a deployment answers on ``/openai/v1/chat/completions`` (default:
            the last user message); an attribute, so a test may change it while serving.
    """

    path_prefix = "/openai"
    queued_status = "pending"

    def __init__(
        self,
        api_key: str = "azure-test-key",
        *,
        bearer_token: str = "mgmt-test-token",
        creating_polls: int = 2,
        fail_deployments: bool = False,
        unknown_fields: UnknownFields = "reject",
        event_order: EventOrder = "newest-first",
        page_size: int | None = None,
        chat_answer: ChatAnswer = _echo,
        **kwargs: Any,
    ) -> None:
        super().__init__(api_key=api_key, **kwargs)
        self.bearer_token = bearer_token
        self.creating_polls = creating_polls
        self.fail_deployments = fail_deployments
        self.unknown_fields = unknown_fields
        self.event_order = event_order
        self.page_size = page_size
        self.deployments: dict[str, dict[str, Any]] = {}
        self.api_versions: set[str] = set()
        self.violations: list[Violation] = []
        self.response_violations: list[Violation] = []
        self.received: list[tuple[str, Any]] = []
        """(operationId, JSON body as sent) of every request with a body."""
        self._deployment_polls: dict[str, int] = {}
        self.chat_answer = chat_answer
        self.chat_requests: list[tuple[str, int]] = []
        """(request ``model``, HTTP status) of every v1 chat completion."""

    @property
    def endpoint(self) -> str:
        """What to give ``AzureOpenAI(azure_endpoint=...)`` and the spec's ``provider.endpoint``."""
        return self.root_url

    # -- data plane ----------------------------------------------------------------------------
    def _authorized(self, headers: Any, query: dict[str, list[str]]) -> bool:
        return bool(headers.get("api-key", "") == self.api_key)

    def _check_request(self, headers: Any, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]] | None:
        version = next(iter(query.get("api-version") or []), None)
        if version is not None:
            self.api_versions.add(version)
        if version != _DATA_PLANE.version:
            self.violations.append(
                Violation(
                    "*", "API_VERSION", "query.api-version", f"{version!r} is not {_DATA_PLANE.version}"
                )
            )
            return 404, error_body("Resource not found", code="404")
        if not self._authorized(headers, query):
            return 401, error_body(
                "Access denied due to invalid subscription key or wrong API endpoint.", code="401"
            )
        return None

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        operation = _DATA_PLANE.operation(method, self.path_prefix + path)
        classic = re.fullmatch(r"/deployments/([^/]+)/chat/completions", path)
        if operation is None and method == "POST" and classic:  # not in the vendored spec either
            return (*self.chat_completion(classic.group(1), body), {})
        if operation is None:
            return super().handle(method, path, query, headers, body)
        json_body: Any = None
        form: dict[str, Any] | None = None
        if operation.body is not None:
            json_body = json.loads(body or b"null")
        if method == "POST" and path == "/files":
            fields, files = _multipart(headers.get("Content-Type", ""), body)
            form = {**fields, **dict.fromkeys(files, "<file>")}
        if json_body is not None:
            self.received.append((operation.operation_id, json_body))
        problems = _DATA_PLANE.validate_request(operation, query, json_body, form)
        self.violations.extend(problems)
        if problems and self.unknown_fields == "reject":
            return 400, error_body("; ".join(str(p) for p in problems), code="invalid_payload"), {}
        if self.unknown_fields == "drop":
            declared = {p["name"] for p in operation.parameters if p["in"] == "query"}
            query = {k: v for k, v in query.items() if k in declared}
            if json_body is not None:
                body = json.dumps(_DATA_PLANE.project_request(operation, json_body)).encode()
        if self.page_size is not None and "limit" in {p["name"] for p in operation.parameters}:
            asked = int((query.get("limit") or ["20"])[0])
            query = {**query, "limit": [str(min(asked, self.page_size))]}
        if method == "GET" and path.endswith("/events"):
            status, payload, extra = self._events(path.split("/")[-2], query)
        else:
            status, payload, extra = super().handle(method, path, query, headers, body)
        if status == 200 and "201" in operation.responses:
            status = 201
        return (status, self._answer(operation, status, payload), extra)

    def _answer(self, operation: Operation, status: int, payload: Any) -> Any:
        if status >= 300:
            return payload
        if self.unknown_fields != "keep":
            payload = _DATA_PLANE.project_response(operation, status, payload)
            self.response_violations.extend(_DATA_PLANE.validate_response(operation, status, payload))
        return payload

    def _events(self, job_id: str, query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        if job_id not in self.state.jobs:
            return 404, error_body(f"Could not find fine-tune job {job_id}"), {}
        events = list(self.state.events.get(job_id, []))
        if self.event_order == "newest-first":
            events.reverse()
        return 200, self._paginate(events, query, 20), {}

    def _event(
        self, job_id: str, message: str, *, level: str = "info", data: dict[str, Any] | None = None
    ) -> None:
        """Events one second apart (as a real job's are), so their creation order is known."""
        super()._event(job_id, message, level=level, data=data)
        events = self.state.events[job_id]
        if len(events) > 1:
            events[-1]["created_at"] = max(events[-1]["created_at"], events[-2]["created_at"] + 1)

    def _new_job(self, body: dict[str, Any]) -> dict[str, Any]:
        job = super()._new_job(body)
        hyper = body.get("hyperparameters") or {}
        job.update(
            status="pending",
            hyperparameters={"n_epochs": hyper.get("n_epochs", -1), **hyper},
            organization_id=None,
            seed=body.get("seed"),
            estimated_finish=None,
            result_files=None,
            integrations=None,
            suffix=body.get("suffix"),
            method=body.get("method") or {"type": "supervised"},
        )
        job.pop("metadata", None)
        for key in ("trainingType", "metadata"):  # undeclared: stored only when the mode keeps them
            if key in body:
                job[key] = body[key]
        return job

    def _model_name(self, job: dict[str, Any]) -> str:
        """Azure names a fine-tune ``<base>.ft-<job>[-<suffix>]`` (its checkpoints add ``:ckpt-step-N``)."""
        tail = f"-{job['suffix']}" if job.get("suffix") else ""
        return f"{job['model']}.ft-{job['id'].removeprefix('ftjob-')}{tail}"

    # -- inference: the v1 surface (not in the vendored spec) ------------------------------------
    def serving(self, deployment: str) -> ServedModel | None:
        """What answers for ``deployment``, or None when it does not exist or is not ``Succeeded``."""
        found = self.deployments.get(deployment)
        if found is None or found["properties"].get("provisioningState") != "Succeeded":
            return None
        model = str((found["properties"].get("model") or {}).get("name") or "")
        jobs = [j for j in self.state.jobs.values() if j.get("fine_tuned_model") == model]
        base = str(jobs[0]["model"]) if jobs else model
        return ServedModel(deployment, model, base, fine_tuned=bool(jobs))

    def handle_v1(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        """One request to ``/openai/v1{path}``; only chat completions are served."""
        if (method, path) != ("POST", "/chat/completions"):
            return 404, unknown_url(method, V1_PREFIX + path).body()
        keys = [self.api_key] if self.api_key is not None else []
        if headers.get("api-key") != self.api_key and not bearer_key_accepted(
            headers.get("Authorization"), keys
        ):
            message = "Access denied due to invalid subscription key or wrong API endpoint."
            return 401, {"error": {"code": "401", "message": message}}
        return self.chat_completion(None, body)

    def chat_completion(self, deployment: str | None, body: bytes) -> tuple[int, Any]:
        """Answer as ``deployment`` (the classic route's path) or the body's ``model`` (v1)."""
        try:
            request = parse_json(body or b"null")
        except ApiError as exc:
            return exc.status_code or 400, exc.body()
        if not isinstance(request, dict):
            request = {}
        messages = request.get("messages")
        name = deployment if deployment is not None else request.get("model")
        if not isinstance(name, str) or not isinstance(messages, list) or not messages:
            return 400, error_body("'model' and a non-empty 'messages' are required", code="invalid_request")
        served = self.serving(name)
        if served is None:
            self.chat_requests.append((name, 404))
            return 404, {"error": {"code": "DeploymentNotFound", "message": DEPLOYMENT_NOT_FOUND}}
        text = self.chat_answer(served, messages)
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages if isinstance(m, dict))
        completion_tokens = len(text.split())
        self.chat_requests.append((name, 200))
        return 200, {
            "id": f"chatcmpl-azure-{len(self.chat_requests):06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": served.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        base: Any = super()._handler_class()
        stub = self

        class Handler(base):  # type: ignore[misc]
            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                if not parts.path.startswith(V1_PREFIX + "/"):
                    super()._serve(method)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = parts.path[len(V1_PREFIX) :].rstrip("/")
                with stub._lock:
                    status, payload = stub.handle_v1(method, path, self.headers, body)
                self._reply(status, payload, {})

        return Handler

    # -- management plane ----------------------------------------------------------------------
    def handle_outside(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, Any, dict[str, str]] | None:
        operation = _MANAGEMENT.operation(method, path)
        if operation is None:
            return None
        version = next(iter(query.get("api-version") or []), None)
        if version != _MANAGEMENT.version:
            self.violations.append(
                Violation(operation.operation_id, "API_VERSION", "query.api-version", f"{version!r}")
            )
            code = "MissingApiVersionParameter" if version is None else "InvalidApiVersionParameter"
            return 400, {"error": {"code": code, "message": f"api-version {version!r} is not supported"}}, {}
        if headers.get("Authorization", "") != f"Bearer {self.bearer_token}":
            return (
                401,
                {"error": {"code": "InvalidAuthenticationToken", "message": "The access token is invalid."}},
                {},
            )
        payload = json.loads(body) if body else None
        if payload is not None:
            self.received.append((operation.operation_id, payload))
        declared = {k: v for k, v in query.items() if k != "$skipToken"}  # the server's own nextLink token
        problems = _MANAGEMENT.validate_request(operation, declared, payload)
        self.violations.extend(problems)
        self.state.requests.append((method, path))
        if problems and self.unknown_fields == "reject":
            message = "; ".join(str(p) for p in problems)
            return 400, {"error": {"code": "InvalidRequestContent", "message": message}}, {}
        if payload is not None and self.unknown_fields == "drop":
            payload = _MANAGEMENT.project_request(operation, payload)
        status, answer = self._deployments(operation.operation_id, path, query, payload)
        if status < 300 and answer is not None:
            self.response_violations.extend(_MANAGEMENT.validate_response(operation, status, answer))
        return status, answer, {}

    def _deployments(
        self, operation_id: str, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        name = path.rsplit("/", 1)[-1]
        if operation_id == "Deployments_List":
            return 200, self._deployment_page(path, query)
        if operation_id == "Deployments_CreateOrUpdate":
            return self._put_deployment(path, name, body or {})
        deployment = self.deployments.get(name)
        if deployment is None:
            return 404, {"error": {"code": "DeploymentNotFound", "message": f"Deployment {name} not found."}}
        if operation_id == "Deployments_Delete":
            del self.deployments[name]
            return 200, None
        polls = self._deployment_polls[name] = self._deployment_polls.get(name, 0) + 1
        properties = deployment["properties"]
        if properties["provisioningState"] == "Creating" and polls >= self.creating_polls:
            properties["provisioningState"] = "Failed" if self.fail_deployments else "Succeeded"
        return 200, deployment

    def _deployment_page(self, path: str, query: dict[str, list[str]]) -> dict[str, Any]:
        names = sorted(self.deployments)
        start = int((query.get("$skipToken") or ["0"])[0])
        size = self.page_size or len(names) or 1
        page: dict[str, Any] = {"value": [self.deployments[n] for n in names[start : start + size]]}
        if start + size < len(names):
            params = urlencode({"api-version": _MANAGEMENT.version, "$skipToken": start + size})
            page["nextLink"] = f"{self.root_url}{path}?{params}"
        return page

    def _put_deployment(self, path: str, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        model = ((body.get("properties") or {}).get("model")) or {}
        succeeded = {j["fine_tuned_model"] for j in self.state.jobs.values() if j["status"] == "succeeded"}
        if model.get("format") != "OpenAI" or model.get("name") not in succeeded or not body.get("sku"):
            message = f"model {model.get('name')!r} is not a succeeded fine-tune"
            return 400, {"error": {"code": "InvalidResourceProperties", "message": message}}
        existing = self.deployments.get(name)
        if existing is not None:
            return 200, existing
        self.add_deployment(path, name, body, state="Creating")
        return 201, self.deployments[name]

    def add_deployment(
        self,
        path: str,
        name: str,
        body: dict[str, Any],
        *,
        state: str = "Succeeded",
        created: float | None = None,
    ) -> dict[str, Any]:
        """Store a deployment as if PUT (tests use it for deployments tuneops did not make)."""
        stamp = _iso(time.time() if created is None else created)
        self.deployments[name] = {
            "id": path,
            "name": name,
            "type": "Microsoft.CognitiveServices/accounts/deployments",
            "sku": body.get("sku") or {"name": "standard", "capacity": 1},
            "tags": dict(body.get("tags") or {}),
            "systemData": {"createdAt": stamp, "createdBy": "stub", "createdByType": "User"},
            "properties": {
                "model": (body.get("properties") or {}).get("model") or {},
                "provisioningState": state,
            },
        }
        return self.deployments[name]
