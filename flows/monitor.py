"""The ``monitor-drift`` flow: judge the champion's traffic, report it, and emit drift.

check drift → log the report (MLflow run + Prefect artifact) → emit ``tuneops.drift.detected``
when the verdict is drifted. The retrain deployment's trigger does the rest; stages never call
each other. Too little traffic is reported as such and emits nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from tuneops.settings import TuneopsSettings
from tuneops.spec import load_spec
from tuneops.tasks.drift.check import DriftCheck
from tuneops.tasks.drift.tasks import check_drift, emit_drift_detected, log_drift_report_task


@dataclass(frozen=True)
class MonitorOutcome:
    """What one check found and did."""

    check: DriftCheck
    report_run_id: str | None
    emitted: bool
    event_summary: str | None
    flow_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.check.to_dict(),
            "flow_run_id": self.flow_run_id,
            "report_run_id": self.report_run_id,
            "emitted": self.emitted,
            "event_summary": self.event_summary,
        }


@flow(name="monitor-drift", validate_parameters=True)
def monitor_drift(spec_path: str = "tuneops.yaml", emit: bool = True) -> MonitorOutcome:
    """Check the champion's served traffic for drift against its training data.

    Args:
        spec_path: the project's ``tuneops.yaml``; settings come from its folder and environment.
        emit: emit ``tuneops.drift.detected`` on a drifted verdict (off: report only).
    """
    log = get_run_logger()
    spec, project_dir = load_spec(Path(spec_path))
    settings = TuneopsSettings.load(project_dir)

    run_id = str(flow_run.get_id() or "") or None  # named in the event, so lineage finds this run
    check = check_drift(spec, settings)
    report_run_id = log_drift_report_task(settings, check, run_id)
    log.info("%s: %s", spec.model.name, check.verdict.summary())
    summary = None
    if check.verdict.drifted and emit:
        summary = emit_drift_detected(check, report_run_id, run_id)
    return MonitorOutcome(
        check=check,
        report_run_id=report_run_id,
        emitted=summary is not None,
        event_summary=summary,
        flow_run_id=run_id,
    )
