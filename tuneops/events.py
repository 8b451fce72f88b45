"""Every Prefect event tuneops emits: names, the resource they are about, and the payload keys.

Stages never call each other; events and deployment triggers connect them, so an event name, a
resource id or a payload key is an interface between two files that never import each other (a
task that emits, a ``deployments/prefect.yaml`` trigger that reacts). They live here, once.

Each event is about one registered model, named by ``model_resource_id`` (``tuneops.model.<name>``).
Triggers match that id exactly: a wildcard would fire for every model. Payload values that a
trigger templates into flow parameters arrive as strings; ``summary`` is the one-line reason a
human (and the retrain trigger's ``reason`` parameter) reads.

Pure module: Prefect is imported only inside ``emit``.
"""

from __future__ import annotations

import re
from typing import Any

DRIFT_DETECTED = "tuneops.drift.detected"
GATE_FAILED = "tuneops.gate.failed"
MODEL_REGISTERED = "tuneops.model.registered"
ROLLOUT_STEP = "tuneops.rollout.step"
ROLLOUT_PROMOTED = "tuneops.rollout.promoted"
ROLLOUT_ROLLED_BACK = "tuneops.rollout.rolled_back"

EVENT_NAMES: frozenset[str] = frozenset(
    {DRIFT_DETECTED, GATE_FAILED, MODEL_REGISTERED, ROLLOUT_STEP, ROLLOUT_PROMOTED, ROLLOUT_ROLLED_BACK}
)

MODEL_RESOURCE_PREFIX = "tuneops.model."

# Payload keys. Every event carries MODEL and SUMMARY; the others where they apply.
MODEL = "model"  # the registered model name (the resource id's tail)
SUMMARY = "summary"  # one line saying why, e.g. the gate's or the drift verdict's reasons
REASONS = "reasons"  # the full list behind SUMMARY
VERSION = "version"  # the registered model version the event is about
CANDIDATE = "candidate"  # the endpoint model that was evaluated
MLFLOW_RUN_ID = "mlflow_run_id"
DATASET_DIGEST = "dataset_digest"
FLOW_RUN_ID = "flow_run_id"  # the Prefect flow run that emitted the event (e.g. monitor-drift's)
PAYLOAD_KEYS: frozenset[str] = frozenset(
    {MODEL, SUMMARY, REASONS, VERSION, CANDIDATE, MLFLOW_RUN_ID, DATASET_DIGEST, FLOW_RUN_ID}
)

# What the retrain deployment's drift trigger passes as the flow's ``reason`` parameter.
RETRAIN_REASON_TEMPLATE = "drift: {{ event.payload." + SUMMARY + " }}"


# A drift event's summary names the check that found it, because the summary is all the retrain
# trigger passes on (as ``reason``): lineage reads the two ids back from the recorded reason.
DRIFT_REPORT_RUN = "drift report run"
MONITOR_FLOW_RUN = "monitor-drift flow run"
_DRIFT_REFERENCE = re.compile(
    rf"({re.escape(DRIFT_REPORT_RUN)}|{re.escape(MONITOR_FLOW_RUN)}) ([0-9A-Za-z-]+)"
)


def drift_summary(verdict_summary: str, report_run_id: str | None, flow_run_id: str | None) -> str:
    """The drift event's summary: the verdict's reasons, then the report run and monitor flow run."""
    refs = [f"{DRIFT_REPORT_RUN} {report_run_id}"] if report_run_id else []
    refs += [f"{MONITOR_FLOW_RUN} {flow_run_id}"] if flow_run_id else []
    return f"{verdict_summary} ({', '.join(refs)})" if refs else verdict_summary


def drift_references(reason: str) -> tuple[str | None, str | None]:
    """The (drift report run id, monitor-drift flow run id) a :func:`drift_summary` names, if any."""
    found = dict(m.groups() for m in _DRIFT_REFERENCE.finditer(reason))
    return found.get(DRIFT_REPORT_RUN), found.get(MONITOR_FLOW_RUN)


def model_resource_id(model_name: str) -> str:
    """The Prefect resource id of a registered model, as every tuneops event and trigger names it."""
    if not model_name or model_name != model_name.strip():
        raise ValueError(f"a model name is needed for a resource id, got {model_name!r}")
    return MODEL_RESOURCE_PREFIX + model_name


def event_payload(model_name: str, summary: str, **fields: Any) -> dict[str, Any]:
    """The payload of a tuneops event: ``model`` and ``summary`` first, then known keys only.

    Raises:
        ValueError: a key no trigger or reader knows about (add it above first).
    """
    unknown = sorted(set(fields) - PAYLOAD_KEYS)
    if unknown:
        raise ValueError(f"unknown event payload keys {unknown}; known: {sorted(PAYLOAD_KEYS)}")
    return {MODEL: model_name, SUMMARY: summary, **fields}


def emit(event: str, model_name: str, summary: str, **fields: Any) -> None:
    """Emit ``event`` about ``model_name`` to Prefect's event stream (payload: ``event_payload``).

    Raises:
        ValueError: ``event`` is not one of ``EVENT_NAMES``, or a payload key is unknown.
    """
    if event not in EVENT_NAMES:
        raise ValueError(f"unknown tuneops event {event!r}; known: {sorted(EVENT_NAMES)}")
    payload = event_payload(model_name, summary, **fields)
    from prefect.events import emit_event  # lazily: this module stays importable without Prefect

    emit_event(
        event=event,
        resource={"prefect.resource.id": model_resource_id(model_name), "prefect.resource.name": model_name},
        payload=payload,
    )
