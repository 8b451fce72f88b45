"""What a rollout leaves behind: the step table as markdown (Prefect artifact, approval form,
``tuneops rollout status``) and one MLflow run with the steps, the per-arm metrics with their
always-valid intervals over time (metric histories MLflow plots, and ``rollout/metrics.png``),
the decision and its reasons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tuneops.registry.tracking import MetricPoint, RunTracker
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.rollout.plot import rollout_figure
from tuneops.tasks.rollout.state import RolloutRecord, RolloutStore, StepRow

EXPERIMENT_SUFFIX = "rollouts"


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def guardrail_table(verdict: Mapping[str, Any] | None) -> str:
    """The last verdict's checks as a markdown table: observed vs required, interval, status."""
    if not verdict:
        return "_no verdict yet_"
    lines = [
        "| guardrail | check | challenger | champion | observed | required | interval | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in verdict.get("checks", []):
        iv = c.get("interval") or {}
        interval = f"[{_num(iv.get('low'))}, {_num(iv.get('high'))}]" if iv else "-"
        lines.append(
            f"| {c['metric']} | {c['kind']} | {_num(c['challenger'])} | {_num(c['champion'])} | "
            f"{_num(c['observed'])} | {_num(c['required'])} | {interval} | {c['status']} |"
        )
    return "\n".join(lines)


def step_table(steps: Sequence[StepRow]) -> str:
    """Every judged interval and transition as a markdown table."""
    lines = [
        "| at | step | weight | action | challenger req. | champion req. | summary |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        summary = s.summary.replace("|", "/")[:200]
        lines.append(
            f"| {s.at:%Y-%m-%d %H:%M:%S} | {s.step_name} | {s.weight / 100:g}% | {s.action} | "
            f"{s.challenger_requests} | {s.champion_requests} | {summary} |"
        )
    return "\n".join(lines)


def report_markdown(record: RolloutRecord, steps: Sequence[StepRow]) -> str:
    last = next((s.verdict for s in reversed(steps) if s.verdict), None)
    return (
        f"# Rollout {record.id}: {record.model} v{record.challenger_version} ({record.strategy})\n\n"
        f"status **{record.status}**: {record.reason or '-'}\n\n## Guardrails\n\n{guardrail_table(last)}\n\n"
        f"## Steps\n\n{step_table(steps)}\n"
    )


def _metric_points(steps: Sequence[StepRow]) -> list[MetricPoint]:
    points: list[MetricPoint] = []
    for i, s in enumerate(x for x in steps if x.verdict):
        assert s.verdict is not None
        stamp = int(s.at.timestamp() * 1000)
        points.append(MetricPoint("weight_percent", s.weight / 100, i, stamp))
        for c in s.verdict.get("checks", []):
            key = f"{c['metric']}.{c['kind']}"
            for name, value in (("challenger", c["challenger"]), ("champion", c["champion"])):
                if value is not None:
                    points.append(MetricPoint(f"{c['metric']}.{name}", float(value), i, stamp))
            iv = c.get("interval") or {}
            for end in ("estimate", "low", "high"):
                value = iv.get(end)
                if isinstance(value, float | int) and abs(value) != float("inf") and value == value:
                    points.append(MetricPoint(f"{key}.{end}", float(value), i, stamp))
    return points


def log_rollout_run(
    spec: Spec, settings: TuneopsSettings, record: RolloutRecord, steps: Sequence[StepRow]
) -> str:
    """The rollout's MLflow run (found again by its rollout id on a re-run); its id."""
    tracker = RunTracker.open(settings.tracking_uri or "", settings.artifact_root)
    run_id, _ = tracker.find_or_start_run(
        f"{spec.model.name}-{EXPERIMENT_SUFFIX}",
        f"rollout-{record.id}",
        key={"tuneops.rollout_id": str(record.id)},
        tags={"tuneops.stage": "rollout", "tuneops.model": record.model},
    )
    params = {
        "model": record.model,
        "challenger_version": record.challenger_version,
        "champion_version": record.champion_version or "",
        "strategy": record.strategy,
    }
    already = tracker.params(run_id)
    tracker.log_batch(
        run_id,
        params={k: v for k, v in params.items() if k not in already},
        tags={"tuneops.rollout_status": record.status, "tuneops.rollout_reason": record.reason[:5000]},
    )
    if record.status not in ("running", "awaiting-approval"):
        tracker.log_batch(run_id, metrics=_metric_points(steps))
    table = {
        "at": [s.at.isoformat() for s in steps],
        "step": [s.step_name for s in steps],
        "weight_percent": [s.weight / 100 for s in steps],
        "action": [s.action for s in steps],
        "challenger_requests": [s.challenger_requests for s in steps],
        "champion_requests": [s.champion_requests for s in steps],
        "summary": [s.summary for s in steps],
    }
    tracker.log_table(run_id, table, "rollout/steps.json")
    last = next((s.verdict for s in reversed(steps) if s.verdict), None)
    tracker.log_dict(
        run_id, {"status": record.status, "reason": record.reason, "verdict": last}, "rollout/decision.json"
    )
    tracker.log_text(run_id, report_markdown(record, steps), "rollout/report.md")
    title = f"rollout {record.id}: {record.model} v{record.challenger_version} ({record.status})"
    tracker.log_figure(run_id, rollout_figure(steps, title), "rollout/metrics.png")
    if record.status not in ("running", "awaiting-approval"):
        tracker.finish_run(run_id)
    return run_id


def publish_rollout_report(spec: Spec, settings: TuneopsSettings, record: RolloutRecord) -> str:
    """MLflow run + Prefect markdown artifact of the rollout; returns the MLflow run id."""
    from prefect.artifacts import create_markdown_artifact

    store = RolloutStore.open(settings.state_db_url or "")
    try:
        steps = store.steps(record.id)
        run_id = log_rollout_run(spec, settings, record, steps)
        store.set_mlflow_run(record.id, run_id)
    finally:
        store.close()
    create_markdown_artifact(
        report_markdown(record, steps),
        key=f"rollout-{record.id}",
        description=f"rollout of {record.model} v{record.challenger_version}",
    )
    return run_id
