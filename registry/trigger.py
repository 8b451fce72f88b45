"""Why a model version was trained: the retrain run's ``reason``, and for drift, the check behind it.

The ``retrain`` flow records its ``reason`` (``manual``, ``schedule``, ``drift: <summary>``) on the
evaluation run (tag ``tuneops.reason``). A drift-triggered reason carries the summary of the
``tuneops.drift.detected`` event, which names the drift report run (MLflow) and the
``monitor-drift`` flow run (Prefect) that found the drift (:func:`tuneops.events.drift_summary`).
Lineage follows that link to the report run, so an audit of a challenger answers "which check,
on which traffic, caused this version" without searching.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneops import events
from tuneops.errors import RegistryError
from tuneops.registry.conventions import TAG_FLOW_RUN_ID, TAG_PREFIX
from tuneops.registry.mlflow_store import RegistryStore, RunSummary

TAG_REASON = f"{TAG_PREFIX}reason"
DRIFT_STATUS_TAG = f"{TAG_PREFIX}drift.status"
DRIFT_SUMMARY_TAG = f"{TAG_PREFIX}drift.summary"
KINDS = ("drift", "schedule", "manual")


@dataclass(frozen=True)
class Trigger:
    """What started the run that produced a version.

    ``kind`` is ``drift``, ``schedule``, ``manual`` or ``other``; the ``drift_*`` and
    ``monitor_flow_run_id`` fields are set only for drift, from the reason and the report run.
    """

    reason: str
    kind: str
    drift_report_run_id: str | None = None
    monitor_flow_run_id: str | None = None
    drift_status: str | None = None
    drift_summary: str | None = None


def trigger_kind(reason: str) -> str:
    """``drift`` / ``schedule`` / ``manual`` from a recorded reason, else ``other`` (pure)."""
    head = reason.strip().lower()
    return next((k for k in KINDS if head == k or head.startswith(f"{k}:")), "other")


def trigger_of(
    store: RegistryStore, evaluation_run: RunSummary | None, warnings: list[str]
) -> Trigger | None:
    """The trigger recorded on ``evaluation_run``; None when the run recorded no reason.

    A drift report run that cannot be read leaves its fields empty and adds a warning.
    """
    reason = (evaluation_run.tags.get(TAG_REASON) if evaluation_run else None) or ""
    if not reason:
        return None
    kind = trigger_kind(reason)
    if kind != "drift":
        return Trigger(reason=reason, kind=kind)
    report_run_id, flow_run_id = events.drift_references(reason)
    status = summary = None
    if report_run_id:
        try:
            report = store.get_run(report_run_id)
        except RegistryError as exc:
            warnings.append(f"drift report run {report_run_id} unreachable: {exc.one_line()}")
        else:
            flow_run_id = flow_run_id or report.tags.get(TAG_FLOW_RUN_ID)
            status = report.tags.get(DRIFT_STATUS_TAG)
            summary = report.tags.get(DRIFT_SUMMARY_TAG)
    else:
        warnings.append("the drift reason names no drift report run")
    return Trigger(
        reason=reason,
        kind=kind,
        drift_report_run_id=report_run_id,
        monitor_flow_run_id=flow_run_id,
        drift_status=status,
        drift_summary=summary,
    )
