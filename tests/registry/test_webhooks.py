"""The webhook receiver over real HTTP: signatures, replay protection, events reaching the ledger."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tuneops.registry.ledger import Ledger
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.webhooks import WEBHOOK_ACTOR, WebhookReceiver, signature, verify

from .conftest import mlflow_client

SECRET = "test-webhook-secret"


@pytest.fixture
def receiver(store: RegistryStore, ledger: Ledger) -> Iterator[WebhookReceiver]:
    started = WebhookReceiver(store, ledger, SECRET).start()
    yield started
    started.stop()


def deliver(url: str, payload: dict[str, Any], secret: str = SECRET, age: int = 0) -> httpx.Response:
    body = json.dumps(payload).encode()
    delivery, stamp = str(uuid.uuid4()), str(int(time.time()) - age)
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": signature(secret, delivery, stamp, body),
    }
    return httpx.post(url, content=body, headers=headers, timeout=30)


def alias_event(name: str, alias: str, version: str) -> dict[str, Any]:
    return {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-11-21T00:00:00+00:00",
        "data": {"name": name, "alias": alias, "version": version},
    }


def test_verify_rejects_forgeries_and_replays() -> None:
    body = b'{"a": 1}'
    now = 1_800_000_000
    good = {
        "X-MLflow-Delivery-Id": "d",
        "X-MLflow-Timestamp": str(now),
        "X-MLflow-Signature": signature(SECRET, "d", str(now), body),
    }
    assert verify(SECRET, good, body, now=now) is None
    assert verify("other", good, body, now=now) == "bad signature"
    assert verify(SECRET, good, body + b" ", now=now) == "bad signature"
    assert verify(SECRET, good, body, now=now + 301) == "timestamp outside the replay window"
    assert verify(SECRET, {}, body, now=now) == "missing signature headers"


def test_an_alias_event_reaches_the_ledger(
    build_version: Any, store: RegistryStore, ledger: Ledger, receiver: WebhookReceiver
) -> None:
    build_version()
    mlflow_client(store).set_registered_model_alias("support-bot", "champion", "1")
    response = deliver(receiver.url, alias_event("support-bot", "champion", "1"))
    assert response.status_code == 200
    (entry,) = ledger.history("support-bot")
    assert (entry.alias, entry.to_version, entry.actor, entry.source) == (
        "champion",
        "1",
        WEBHOOK_ACTOR,
        "webhook",
    )
    # a duplicate delivery adds nothing: the receiver reconciles instead of trusting the payload
    assert deliver(receiver.url, alias_event("support-bot", "champion", "1")).status_code == 200
    assert len(ledger.history("support-bot")) == 1


def test_unsigned_or_stale_deliveries_are_refused(
    build_version: Any, store: RegistryStore, ledger: Ledger, receiver: WebhookReceiver
) -> None:
    build_version()
    mlflow_client(store).set_registered_model_alias("support-bot", "champion", "1")
    assert (
        deliver(receiver.url, alias_event("support-bot", "champion", "1"), secret="wrong").status_code == 401
    )
    assert deliver(receiver.url, alias_event("support-bot", "champion", "1"), age=3600).status_code == 401
    assert httpx.post(receiver.url, json={}, timeout=30).status_code == 401
    assert ledger.history("support-bot") == []


def test_other_entities_are_acknowledged_and_ignored(receiver: WebhookReceiver, ledger: Ledger) -> None:
    payload = {"entity": "registered_model", "action": "created", "data": {"name": "x"}}
    assert deliver(receiver.url, payload).status_code == 200
    assert ledger.models() == []
