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
def log_drift_report_task(settings: TuneopsSettings, check: DriftCheck) -> str:
    """Log the check to MLflow and as a Prefect artifact; returns the MLflow run id."""
    run_id, markdown = log_drift_report(
        settings, check.verdict, check.champion, check.notes, check.checked_at
    )
    key = f"drift-{check.verdict.model}".lower().replace(".", "-").replace("_", "-")
    create_markdown_artifact(markdown, key=key, description=check.verdict.summary()[:500])
    return run_id


def drift_event_summary(check: DriftCheck, report_run_id: str | None) -> str:
    """The event's one-line summary: the verdict's reasons, and the report run that holds them."""
    summary = check.verdict.summary()
    return f"{summary} (drift report run {report_run_id})" if report_run_id else summary


@task(name="emit-drift-detected")
def emit_drift_detected(check: DriftCheck, report_run_id: str | None) -> str:
    """Emit ``tuneops.drift.detected`` on the model's resource; returns the summary sent."""
    summary = drift_event_summary(check, report_run_id)
    fields = {events.REASONS: check.verdict.reasons}
    if check.verdict.version:
        fields[events.VERSION] = check.verdict.version
    if report_run_id:
        fields[events.MLFLOW_RUN_ID] = report_run_id
    events.emit(events.DRIFT_DETECTED, check.verdict.model, summary, **fields)
    return summary
