"""tuneops.events: the names and resource ids that emitters and deployment triggers share."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tuneops import events


def test_event_names_are_the_architectures() -> None:
    architecture = {
        "tuneops.drift.detected",
        "tuneops.gate.failed",
        "tuneops.model.registered",
        "tuneops.rollout.step",
        "tuneops.rollout.promoted",
        "tuneops.rollout.rolled_back",
    }
    declared = events.EVENT_NAMES
    assert declared == architecture
    assert events.GATE_FAILED == "tuneops.gate.failed"
    assert events.DRIFT_DETECTED == "tuneops.drift.detected"


def test_model_resource_id_names_exactly_one_model() -> None:
    assert events.model_resource_id("claims-triage") == "tuneops.model.claims-triage"
    assert events.model_resource_id("claims-triage").startswith(events.MODEL_RESOURCE_PREFIX)
    for bad in ("", " claims-triage", "claims-triage\n"):
        with pytest.raises(ValueError, match="model name"):
            events.model_resource_id(bad)


def test_payload_has_model_and_summary_and_only_known_keys() -> None:
    payload = events.event_payload("m", "gate failed: f1 0 < 0.9", reasons=["f1 0 < 0.9"], version="3")
    assert payload == {
        "model": "m",
        "summary": "gate failed: f1 0 < 0.9",
        "reasons": ["f1 0 < 0.9"],
        "version": "3",
    }
    with pytest.raises(ValueError, match=r"unknown event payload keys \['verdict'\]"):
        events.event_payload("m", "drifted", verdict="drifted")


def test_retrain_reason_template_reads_a_payload_key_every_event_has() -> None:
    assert events.RETRAIN_REASON_TEMPLATE == "drift: {{ event.payload.summary }}"
    assert events.SUMMARY in events.event_payload("m", "x")


def test_importing_events_does_not_import_prefect() -> None:
    code = "import sys, tuneops.events; sys.exit('prefect' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_emit_refuses_an_unknown_event_name() -> None:
    with pytest.raises(ValueError, match=r"unknown tuneops event 'tuneops\.gate\.faild'"):
        events.emit("tuneops.gate.faild", "m", "typo")


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Events emitted during the test, captured by Prefect's own asserting client."""
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker

    worker = EventsWorker.instance(AssertingEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)
    seen: list[object] = []
    yield seen
    worker.drain()


def test_emit_names_the_model_resource_and_payload(captured: list[object]) -> None:
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker

    events.emit(events.ROLLOUT_STEP, "claims-triage", "canary at 10%", version="4")
    EventsWorker.instance().drain()
    sent = [
        e for client in AssertingEventsClient.all for e in client.events if e.event == "tuneops.rollout.step"
    ]
    assert len(sent) == 1
    assert sent[0].resource.id == "tuneops.model.claims-triage"
    assert sent[0].resource.name == "claims-triage"
    assert sent[0].payload == {"model": "claims-triage", "summary": "canary at 10%", "version": "4"}
