"""The drift report: Markdown for people, metrics and a chart of every signal over time in MLflow.

Each check is one MLflow run in the model's experiment, tagged ``tuneops.kind=drift``, holding
the verdict (``drift/verdict.json``), the Markdown report (``drift/report.md``) and a chart of
each measured signal across this and the earlier checks (``drift/signals.png``), with its
threshold drawn in. Metrics are ``drift.<signal>``, so MLflow's own charts compare checks too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from tuneops.registry.conventions import TAG_FLOW_RUN_ID
from tuneops.settings import TuneopsSettings
from tuneops.tasks.drift.rules import QUALITY_PREFIX, DriftVerdict

RUN_KIND_TAG = "tuneops.kind"
RUN_KIND = "drift"
METRIC_PREFIX = "drift."


def metric_key(signal: str) -> str:
    """A signal's MLflow metric name (MLflow refuses ``:``): ``quality:format`` -> ``quality.format``."""
    return signal.replace(":", ".")


def verdict_metrics(verdict: DriftVerdict) -> dict[str, float]:
    """The verdict as MLflow metrics: each measured signal's value, requests, and 0/1 drifted."""
    metrics = {
        f"{METRIC_PREFIX}requests": float(verdict.requests),
        f"{METRIC_PREFIX}drifted": float(verdict.drifted),
    }
    for signal in verdict.signals:
        if signal.measured and signal.observed is not None:
            metrics[f"{METRIC_PREFIX}{metric_key(signal.name)}"] = float(signal.observed)
    return metrics


def report_markdown(verdict: DriftVerdict, champion: Mapping[str, Any], notes: Sequence[str] = ()) -> str:
    """The check as Markdown: verdict, window, reference, then one row per signal."""
    status = {
        "drifted": "**DRIFTED**",
        "no_drift": "no drift",
        "insufficient_traffic": "insufficient traffic",
    }
    lines = [
        f"# Drift check: {verdict.model} version {verdict.version or '-'}",
        "",
        f"Verdict: {status[verdict.status]}: {verdict.summary()}",
        "",
        f"- window: {_when(verdict.window_start)} to {_when(verdict.window_end)}, "
        f"{verdict.requests} answered requests (at least {verdict.min_requests} needed)",
        f"- reference: training data {champion.get('dataset') or 'unknown'}; "
        f"champion since {champion.get('promoted_at') or 'unknown'}",
    ]
    if verdict.signals:
        lines += [
            "",
            "| signal | drifted | observed | baseline | threshold | effect | detail |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in verdict.signals:
            mark = "yes" if s.drifted else ("no" if s.measured else "not measured")
            lines.append(
                f"| {s.name} | {mark} | {_num(s.observed)} | {_num(s.baseline)} | {_num(s.threshold)} "
                f"| {_num(s.effect)} | {s.message} |"
            )
    quality = [s for s in verdict.signals if s.name.startswith(QUALITY_PREFIX)]
    if quality:
        lines += ["", "Sampled quality scores (the evaluation's scorers on served answers):"]
        lines += [f"- {s.message}{' - DRIFTED' if s.drifted else ''}" for s in quality]
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def signals_figure(
    history: Sequence[tuple[datetime, Mapping[str, float]]], thresholds: Mapping[str, float]
) -> Any:
    """One panel per signal: its value at each check, the threshold as a dashed line."""
    from matplotlib.figure import Figure

    names = sorted({k for _, metrics in history for k in metrics if k in thresholds})
    figure = Figure(figsize=(8, 2.2 * max(len(names), 1)), layout="constrained")
    axes = figure.subplots(max(len(names), 1), 1, squeeze=False)[:, 0]
    for axis, name in zip(axes, names, strict=False):
        points = [(at, metrics[name]) for at, metrics in history if name in metrics]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        axis.axhline(thresholds[name], linestyle="--", color="red", linewidth=1)
        axis.set_title(name, fontsize=9)
        axis.tick_params(labelsize=7)
    if not names:
        axes[0].text(0.5, 0.5, "no signal measured yet", ha="center", va="center")
    return figure


def log_drift_report(
    settings: TuneopsSettings,
    verdict: DriftVerdict,
    champion: Mapping[str, Any],
    notes: Sequence[str],
    checked_at: datetime,
    *,
    flow_run_id: str | None = None,
) -> tuple[str, str]:
    """Log one check to MLflow; returns (run id, Markdown report).

    ``flow_run_id`` is the ``monitor-drift`` flow run that made the check (tagged
    ``tuneops.flow_run_id``), so lineage can go from a drift-triggered version to that run.
    """
    from tuneops.registry.mlflow_store import RegistryStore
    from tuneops.registry.tracking import MetricPoint, RunTracker

    tracker = RunTracker.open(settings.tracking_uri or "", settings.artifact_root)
    tags = {
        RUN_KIND_TAG: RUN_KIND,
        "tuneops.drift.status": verdict.status,
        "tuneops.version": verdict.version or "",
    }
    if flow_run_id:
        tags[TAG_FLOW_RUN_ID] = flow_run_id
    run_id = tracker.start_run(verdict.model, f"drift-check-{checked_at:%Y%m%dT%H%M%S}", tags)
    metrics = verdict_metrics(verdict)
    stamp = int(checked_at.timestamp() * 1000)
    tracker.log_batch(
        run_id,
        params={"window_requests": str(verdict.requests), "dataset": str(champion.get("dataset"))},
        metrics=[MetricPoint(k, v, timestamp_ms=stamp) for k, v in metrics.items()],
        tags={"tuneops.drift.summary": verdict.summary()[:4000]},
    )
    markdown = report_markdown(verdict, champion, notes)
    tracker.log_text(run_id, markdown, "drift/report.md")
    tracker.log_dict(
        run_id, {**verdict.to_dict(), "champion": dict(champion), "notes": list(notes)}, "drift/verdict.json"
    )

    store = RegistryStore(settings.tracking_uri or "", settings.artifact_root)
    earlier = store.find_runs(store.ensure_experiment(verdict.model), {RUN_KIND_TAG: RUN_KIND})
    history = [
        (run.start_time, {k.removeprefix(METRIC_PREFIX): v for k, v in run.metrics.items()})
        for run in earlier
        if run.start_time is not None and run.run_id != run_id
    ]
    history.append((checked_at, {k.removeprefix(METRIC_PREFIX): v for k, v in metrics.items()}))
    thresholds = {metric_key(s.name): s.threshold for s in verdict.signals if s.threshold is not None}
    tracker.log_figure(
        run_id, signals_figure(sorted(history, key=lambda h: h[0]), thresholds), "drift/signals.png"
    )
    tracker.finish_run(run_id)
    return run_id, markdown
