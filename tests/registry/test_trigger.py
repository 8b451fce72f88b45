"""Why a version was trained, read back from a real MLflow store: reason kinds and the drift check."""

from __future__ import annotations

from typing import Any

import pytest

from tuneops import events
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.tracking import RunTracker
from tuneops.registry.trigger import trigger_kind, trigger_of


def _run(store: RegistryStore, tags: dict[str, str]) -> Any:
    tracker = RunTracker.open(store.tracking_uri, store.artifact_root)
    run_id = tracker.start_run("m", "r", tags)
    tracker.finish_run(run_id)
    return store.get_run(run_id)


@pytest.mark.parametrize(
    ("reason", "kind"),
    [("drift: psi 0.4", "drift"), ("schedule", "schedule"), ("manual", "manual"), ("by hand", "other"),
     ("drifting along", "other")],
)  # fmt: skip
def test_reason_kinds(reason: str, kind: str) -> None:
    assert trigger_kind(reason) == kind


def test_the_summary_round_trips_both_ids() -> None:
    summary = events.drift_summary("embedding AUC 0.97 > 0.55", "ab12" * 8, "0c4e-11")
    refs = f"drift report run {'ab12' * 8}, monitor-drift flow run 0c4e-11"
    assert summary == f"embedding AUC 0.97 > 0.55 ({refs})"
    assert events.drift_references(f"drift: {summary}") == ("ab12" * 8, "0c4e-11")
    assert events.drift_references("schedule") == (None, None)
    assert events.drift_summary("x", None, None) == "x"


def test_a_drift_reason_leads_to_the_report_run_and_the_monitor_flow_run(store: RegistryStore) -> None:
    report = _run(
        store,
        {"tuneops.kind": "drift", "tuneops.drift.status": "drifted",
         "tuneops.drift.summary": "embedding AUC 0.97 > 0.55", "tuneops.flow_run_id": "flow-7"},
    )  # fmt: skip
    # an older event summary named only the report run: the flow run comes from the run's tag
    evaluation = _run(store, {"tuneops.reason": f"drift: AUC 0.97 (drift report run {report.run_id})"})
    warnings: list[str] = []
    trigger = trigger_of(store, evaluation, warnings)
    assert trigger is not None and not warnings
    assert (trigger.kind, trigger.drift_report_run_id, trigger.monitor_flow_run_id) == (
        "drift",
        report.run_id,
        "flow-7",
    )
    assert trigger.drift_status == "drifted" and trigger.drift_summary == "embedding AUC 0.97 > 0.55"


def test_other_reasons_and_broken_links(store: RegistryStore) -> None:
    warnings: list[str] = []
    scheduled = trigger_of(store, _run(store, {"tuneops.reason": "schedule"}), warnings)
    assert scheduled is not None and scheduled.kind == "schedule" and scheduled.drift_report_run_id is None
    assert trigger_of(store, _run(store, {}), warnings) is None
    assert trigger_of(store, None, warnings) is None
    assert not warnings
    broken = _run(store, {"tuneops.reason": "drift: x (drift report run deadbeef)"})
    gone = trigger_of(store, broken, warnings)
    assert gone is not None and gone.drift_report_run_id == "deadbeef" and gone.drift_status is None
    assert warnings and "deadbeef" in warnings[0]
