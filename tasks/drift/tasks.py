"""Thin Prefect tasks of the drift stage; the logic lives in ``check``, ``report`` and ``rules``."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from tuneops import events
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.drift.check import DriftCheck, run_drift_check
from tuneops.tasks.drift.report import log_drift_report


@task(name="check-drift")
def check_drift(spec: Spec, settings: TuneopsSettings) -> DriftCheck:
    """Judge the champion's served traffic of the last ``monitoring.window_hours``."""
    return run_drift_check(spec, settings)


@task(name="log-drift-report", retries=2, retry_delay_seconds=[2, 5])
def log_drift_report_task(
    settings: TuneopsSettings, check: DriftCheck, flow_run_id: str | None = None
) -> str:
    """Log the check to MLflow and as a Prefect artifact; returns the MLflow run id.

    ``flow_run_id`` (the monitor's flow run) is tagged on the report run, so a retrain the
    report caused can be traced to the Prefect run that made it.
    """
    run_id, markdown = log_drift_report(
        settings, check.verdict, check.champion, check.notes, check.checked_at, flow_run_id=flow_run_id
    )
    key = f"drift-{check.verdict.model}".lower().replace(".", "-").replace("_", "-")
    create_markdown_artifact(markdown, key=key, description=check.verdict.summary()[:500])
    return run_id


def drift_event_summary(check: DriftCheck, report_run_id: str | None, flow_run_id: str | None = None) -> str:
    """The event's one-line summary: the verdict's reasons, the report run and the monitor's flow run.

    The summary becomes the triggered retrain's ``reason``, which is how ``tuneops lineage``
    names the check that caused a version (see :func:`tuneops.events.drift_references`).
    """
    return events.drift_summary(check.verdict.summary(), report_run_id, flow_run_id)


@task(name="emit-drift-detected")
def emit_drift_detected(check: DriftCheck, report_run_id: str | None, flow_run_id: str | None = None) -> str:
    """Emit ``tuneops.drift.detected`` on the model's resource; returns the summary sent."""
    summary = drift_event_summary(check, report_run_id, flow_run_id)
    fields = {events.REASONS: check.verdict.reasons}
    if check.verdict.version:
        fields[events.VERSION] = check.verdict.version
    if report_run_id:
        fields[events.MLFLOW_RUN_ID] = report_run_id
    if flow_run_id:
        fields[events.FLOW_RUN_ID] = flow_run_id
    events.emit(events.DRIFT_DETECTED, check.verdict.model, summary, **fields)
    return summary
