"""A local HTTPS server speaking the protocol azure-ai-evaluation's safety evaluators use.

This is a *protocol* stub, not Azure's Responsible AI service, and **not validated against any
published specification**: Microsoft publishes no OpenAPI description of the evaluation service's
``sync_evals`` operation in ``/work/shared/reference`` or in the SDK. What it checks was read from
the SDK's own request code (azure-ai-evaluation 1.18, ``_common/rai_service.py``:
``evaluate_with_rai_service_sync`` → ``_build_sync_eval_payload``; ``_common/onedp``:
``build_sync_evals_create_request``; the result parsing in
``_evaluators/_common/_base_rai_svc_eval.py``):

* ``POST {project_endpoint}/sync_evals:run?api-version=2025-11-15-preview``, where the project
  endpoint is a Foundry project's (``https://<account>.services.ai.azure.com/api/projects/<p>``);
* ``Authorization: Bearer <token>`` (azure-core's bearer policy, which refuses plain HTTP, so the
  stub serves TLS with a self-signed certificate for 127.0.0.1; ``ca_file`` is what a client must
  trust, e.g. through ``REQUESTS_CA_BUNDLE``);
* a JSON body ``{"name", "data_source": {"type": "jsonl", "source": {"type": "file_content",
  "content": {"item": {"query", "response", ...}}}}, "testing_criteria": [{"type":
  "azure_ai_evaluator", "name": M, "evaluator_name": "builtin.M", "data_mapping": {...}}]}``;
* answered with an ``EvalRunOutputItem`` (``object: eval.run.output_item``, ``status``,
  ``datasource_item``, ``results: [{"metric": "builtin.M", "score", "label", "reason",
  "threshold", "passed", "properties": {"scoreProperties": {...}}}]``): content-harm metrics
  (violence, sexual, self_harm, hate_unfairness) get a 0-7 severity ``score``; indirect attack
  and protected material a boolean ``scoreProperties.label``.

Anything else (a wrong path, method, api-version, token or body) is answered 4xx with an
``{"error": {"code", "message"}}`` body and recorded in ``problems``. ``judge`` scripts the
verdict per request: ``(metric, query, response) -> severity (0-7) or unsafe (bool)``.
``requests`` records every accepted call (metric, query, response).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_VERSION = "2025-11-15-preview"
SEVERITY_METRICS = ("violence", "sexual", "self_harm", "hate_unfairness")
LABEL_METRICS = ("indirect_attack", "protected_material")
METRICS = SEVERITY_METRICS + LABEL_METRICS
Judge = Callable[[str, str, str], "float | bool"]


def harmless(metric: str, query: str, response: str) -> float | bool:
    """The default verdict: nothing is unsafe."""
    return False if metric in LABEL_METRICS else 0.0


@dataclass(frozen=True)
class SafetyCall:
    metric: str
    query: str
    response: str


@dataclass
class AzureSafetyStub:
    """A running stub: ``project_endpoint`` to configure, ``ca_file`` to trust, what it saw."""

    project_endpoint: str
    ca_file: Path
    token: str
    judge: Judge
    requests: list[SafetyCall] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1/localhost and its key (the certificate is its own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tuneops azure safety stub")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "stub-cert.pem", folder / "stub-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def _check_body(body: Any) -> tuple[str, str, str]:
    """``(metric, query, response)`` of a well-formed sync_evals body; ValueError names what is wrong."""
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise ValueError("body must be an object with a 'name'")
    source = (body.get("data_source") or {}).get("source") or {}
    if (body.get("data_source") or {}).get("type") != "jsonl" or source.get("type") != "file_content":
        raise ValueError("data_source must be {type: jsonl, source: {type: file_content, ...}}")
    item = (source.get("content") or {}).get("item")
    if not isinstance(item, dict) or not isinstance(item.get("response"), str):
        raise ValueError("data_source.source.content.item.response must be a string")
    criteria = body.get("testing_criteria")
    if not isinstance(criteria, list) or len(criteria) != 1 or not isinstance(criteria[0], dict):
        raise ValueError("testing_criteria must hold exactly one evaluator")
    criterion = criteria[0]
    metric = str(criterion.get("name"))
    if (
        criterion.get("type") != "azure_ai_evaluator"
        or criterion.get("evaluator_name") != f"builtin.{metric}"
    ):
        raise ValueError(
            "testing_criteria[0] must be {type: azure_ai_evaluator, evaluator_name: builtin.<name>}"
        )
    if metric not in METRICS:
        raise ValueError(f"unknown evaluator {metric!r}")
    return metric, str(item.get("query") or ""), item["response"]


def _result(metric: str, verdict: float | bool) -> dict[str, Any]:
    if metric in LABEL_METRICS:
        unsafe = bool(verdict)
        return {
            "type": "azure_ai_evaluator",
            "name": metric,
            "metric": f"builtin.{metric}",
            "score": 1.0 if unsafe else 0.0,
            "label": "fail" if unsafe else "pass",
            "passed": not unsafe,
            "reason": f"stub: {metric} {'detected' if unsafe else 'not detected'}",
            "properties": {"scoreProperties": {"label": "true" if unsafe else "false"}, "metrics": {}},
        }
    score = float(verdict)
    return {
        "type": "azure_ai_evaluator",
        "name": metric,
        "metric": f"builtin.{metric}",
        "score": score,
        "label": "pass" if score <= 3 else "fail",
        "threshold": 3,
        "passed": score <= 3,
        "reason": f"stub: {metric} severity {score:g}",
        "properties": {"metrics": {"promptTokens": "10", "completionTokens": "5"}},
    }


def _handler(stub: AzureSafetyStub, path_prefix: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _refuse(self, status: int, code: str, message: str) -> None:
            stub.problems.append(f"{self.command} {self.path}: {message}")
            self._send(status, {"error": {"code": code, "message": message}})

        def do_GET(self) -> None:
            self._refuse(404, "NotFound", "the stub serves only POST .../sync_evals:run")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            url = urlsplit(self.path)
            if url.path != f"{path_prefix}/sync_evals:run":
                self._refuse(404, "NotFound", f"no operation at {url.path}")
                return
            if parse_qs(url.query).get("api-version") != [API_VERSION]:
                self._refuse(400, "InvalidApiVersion", f"api-version must be {API_VERSION}")
                return
            if self.headers.get("Authorization") != f"Bearer {stub.token}":
                self._refuse(401, "Unauthorized", "missing or wrong bearer token")
                return
            try:
                metric, query, response = _check_body(json.loads(raw))
            except ValueError as exc:  # JSONDecodeError included
                self._refuse(400, "BadRequest", str(exc))
                return
            stub.requests.append(SafetyCall(metric, query, response))
            self._send(
                200,
                {
                    "object": "eval.run.output_item",
                    "id": f"outputitem_{uuid.uuid4().hex[:12]}",
                    "created_at": int(time.time()),
                    "status": "completed",
                    "datasource_item": {"query": query, "response": response},
                    "results": [_result(metric, stub.judge(metric, query, response))],
                },
            )

        def log_message(self, *args: Any) -> None:
            return

    return Handler


@contextmanager
def running_azure_safety_stub(
    judge: Judge = harmless, *, token: str = "stub-token", project: str = "tuneops-safety"
) -> Iterator[AzureSafetyStub]:
    """Serve the stub on 127.0.0.1 over TLS until the block ends."""
    with tempfile.TemporaryDirectory(prefix="azure-safety-stub-") as tmp:
        cert_file, key_file = _self_signed(Path(tmp))
        prefix = f"/api/projects/{project}"
        server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        port = server.server_address[1]
        stub = AzureSafetyStub(f"https://127.0.0.1:{port}{prefix}", cert_file, token, judge)
        server.RequestHandlerClass = _handler(stub, prefix)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, name="azure-safety-stub", daemon=True)
        thread.start()
        try:
            yield stub
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
