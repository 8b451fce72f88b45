"""A receiver for MLflow registry webhooks: alias moves reach the ledger as they happen.

MLflow (OSS, experimental) sends ``model_version_alias.created/deleted`` events only when the
registry is served by ``mlflow server``, UI moves included. The server must run with
``MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https`` and ``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true`` for a
receiver on a private address, and ``MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY`` (a Fernet key) so
the shared secret survives restarts; it caches the webhook list for ``MLFLOW_WEBHOOK_CACHE_TTL``
seconds (60 by default), so a new hook may take that long to fire.

The receiver verifies the HMAC signature (``X-MLflow-Signature: v1,<base64 sha256>`` over
``delivery_id.timestamp.body``) and the timestamp (replay window), then *reconciles* the model
rather than trusting the payload: an event that is lost, duplicated or out of order can never
corrupt the ledger, and the periodic reconciliation remains the safety net.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tuneops.errors import RegistryError
from tuneops.registry.ledger import Ledger
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.promotion import reconcile

WEBHOOK_PATH = "/mlflow-webhook"
WEBHOOK_NAME = "tuneops-ledger"
ALIAS_EVENTS: list[Any] = ["model_version_alias.created", "model_version_alias.deleted"]
REPLAY_WINDOW_SECONDS = 300
WEBHOOK_ACTOR = "mlflow (webhook)"


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's webhook signature of one delivery."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: Any, body: bytes, now: float | None = None) -> str | None:
    """None when the delivery is authentic and fresh, else why it is rejected."""
    delivery_id = headers.get("X-MLflow-Delivery-Id") or ""
    timestamp = headers.get("X-MLflow-Timestamp") or ""
    sent = headers.get("X-MLflow-Signature") or ""
    if not (delivery_id and timestamp and sent):
        return "missing signature headers"
    try:
        age = abs((now or time.time()) - int(timestamp))
    except ValueError:
        return "bad timestamp"
    if age > REPLAY_WINDOW_SECONDS:
        return "timestamp outside the replay window"
    if not hmac.compare_digest(sent, signature(secret, delivery_id, timestamp, body)):
        return "bad signature"
    return None


@dataclass(frozen=True)
class AliasEvent:
    model: str
    alias: str
    action: str
    version: str | None


def parse_event(body: bytes) -> AliasEvent | None:
    """The alias event in a delivery, or None for any other entity (ignored)."""
    payload = json.loads(body)
    if payload.get("entity") != "model_version_alias":
        return None
    data = payload.get("data") or {}
    return AliasEvent(str(data["name"]), str(data["alias"]), str(payload.get("action")), data.get("version"))


class WebhookReceiver:
    """An HTTP server that turns MLflow alias events into ledger rows (via reconciliation)."""

    def __init__(
        self,
        store: RegistryStore,
        ledger: Ledger,
        secret: str,
        host: str = "127.0.0.1",
        port: int = 0,
        on_event: Callable[[AliasEvent], None] | None = None,
    ) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != WEBHOOK_PATH:
                    self._reply(404, "not found")
                    return
                problem = verify(secret, self.headers, body)
                if problem is not None:
                    self._reply(401, problem)
                    return
                try:
                    event = parse_event(body)
                except (ValueError, KeyError, TypeError):
                    self._reply(400, "not an MLflow webhook payload")
                    return
                if event is not None:
                    try:
                        receiver.handle(event)
                    except RegistryError as exc:
                        self._reply(503, exc.one_line())  # MLflow retries; reconciliation catches up anyway
                        return
                    if on_event is not None:
                        on_event(event)
                self._reply(200, "ok")

            def _reply(self, status: int, message: str) -> None:
                data = json.dumps({"message": message}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.store, self.ledger = store, ledger
        self.server = ThreadingHTTPServer((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}{WEBHOOK_PATH}"

    def handle(self, event: AliasEvent) -> None:
        reconcile(
            self.store,
            self.ledger,
            event.model,
            source="webhook",
            actor=WEBHOOK_ACTOR,
            reason=f"alias {event.alias} {event.action} in MLflow (UI or API)",
        )

    def start(self) -> WebhookReceiver:
        self._thread = threading.Thread(target=self.server.serve_forever, name="mlflow-webhooks", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def install_webhook(store: RegistryStore, url: str, secret: str) -> str:
    """Create (or repoint) the ``tuneops-ledger`` webhook in MLflow; returns its id.

    Raises:
        RegistryError: the tracking store has no webhook support (only ``mlflow server`` and SQL
            stores do) or refused the URL (see the module docstring for the server's settings).
    """
    return store.upsert_webhook(WEBHOOK_NAME, url, secret, ALIAS_EVENTS)
