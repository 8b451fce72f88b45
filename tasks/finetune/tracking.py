"""MLflow side of the fine-tune stage: parameters, step metrics from job events, cost, loss curve,
and the overfitting check read from the job's checkpoints (``best_epoch``, ``stopped_early``,
``validation_loss_rise``; the plot marks the best checkpoint).

Only values we choose are logged: the job's hyperparameters, ids, token counts and costs. Nothing
from settings is ever logged, so API keys cannot leak into the tracking store. What to log is
decided here; the writing goes through the registry's ``RunTracker`` (no MLflow import here).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from tuneops.registry.conventions import RUN_KIND_FINETUNE, TAG_JOB_ID, TAG_RUN_KIND
from tuneops.registry.tracking import MetricPoint, RunTracker, stage_inputs
from tuneops.registry.types import DatasetLink
from tuneops.settings import TuneopsSettings
from tuneops.tasks.finetune.checkpoints import TrainingReport, describe
from tuneops.tasks.finetune.rules import new_metric_events
from tuneops.tasks.finetune.types import Checkpoint, FineTuneJob, TrainingEvent

LOSS_CURVE_DIR = "finetune"
LOSS_CURVE_ARTIFACT = f"{LOSS_CURVE_DIR}/loss_curve.png"
CHECKPOINTS_ARTIFACT = f"{LOSS_CURVE_DIR}/checkpoints.json"


def open_job_run(
    settings: TuneopsSettings,
    experiment: str,
    job: FineTuneJob,
    *,
    dataset_ref: str,
    datasets: Sequence[DatasetLink],
    manifest: dict[str, object],
) -> str:
    """The MLflow run that records ``job``: found by ``tuneops.job_id``, else started now.

    A new run gets the dataset's splits as inputs (each split is a lineage input of the run that
    trained on it) and the version's manifest as ``datasets/<name>/manifest.json``.
    """
    tracker = RunTracker.open(settings.tracking_uri or "", settings.artifact_root)
    run_id, created = tracker.find_or_start_run(
        experiment,
        f"finetune-{job.id}",
        key={TAG_JOB_ID: job.id, TAG_RUN_KIND: RUN_KIND_FINETUNE},
        tags={"tuneops.dataset": dataset_ref},
    )
    if created:
        tracker.log_dataset_inputs(run_id, stage_inputs(datasets))
        if datasets:
            tracker.log_manifest(run_id, datasets[0].dataset_name, manifest)
    return run_id


@dataclass
class FineTuneTracker:
    """Logs one fine-tune job into one MLflow run."""

    tracker: RunTracker
    run_id: str
    last_step: int = -1
    """Highest step already logged; -1 so a provider's step-0 (base model) validation loss is kept."""
    logged_steps: set[int] = field(default_factory=set)
    """Every step already logged: a step reported late (any server order) is logged once, still."""

    @classmethod
    def open(cls, settings: TuneopsSettings, experiment: str, run_id: str | None = None) -> FineTuneTracker:
        """Attach to ``run_id`` (or the active run), else start a run in ``experiment``.

        Raises:
            RegistryError: MLflow is unusable.
        """
        tracker = RunTracker.open(settings.tracking_uri or "", settings.artifact_root)
        run_id = run_id or tracker.active_run_id() or tracker.start_run(experiment, "finetune")
        steps = [m.step for key in ("train_loss", "valid_loss") for m in tracker.metric_history(run_id, key)]
        return cls(tracker=tracker, run_id=run_id, last_step=max(steps, default=-1), logged_steps=set(steps))

    def log_start(
        self, job: FineTuneJob, estimated_tokens: int | None, price: float, dataset_ref: str
    ) -> None:
        """Job identity and the cost estimate, once per run (hyperparameters come at the end,
        when the provider has resolved its "auto" values)."""
        params = {
            "provider": job.provider,
            "base_model": job.model,
            "job_id": job.id,
            "dataset": dataset_ref,
            "idempotency_key": job.metadata.get("tuneops_idempotency_key", ""),
        }
        existing = self.tracker.params(self.run_id)
        tags = {"tuneops.job_id": job.id, "tuneops.provider": job.provider, "tuneops.base_model": job.model}
        metrics = []
        if estimated_tokens is not None:
            metrics = [
                MetricPoint("estimated_training_tokens", estimated_tokens),
                MetricPoint("estimated_cost_usd", estimated_tokens * price / 1_000_000),
            ]
        fresh = {k: v for k, v in params.items() if k not in existing}
        self.tracker.log_batch(self.run_id, metrics=metrics, params=fresh, tags=tags)

    def log_events(self, events: list[TrainingEvent]) -> None:
        """Step metrics for metrics events not logged yet (a resumed wait does not log twice)."""
        fresh = new_metric_events(events, self.logged_steps)
        metrics: list[MetricPoint] = []
        for event in fresh:
            stamp = event.created_at * 1000 if event.created_at else None
            values = {"train_loss": event.train_loss, "valid_loss": event.valid_loss, **event.extra_metrics}
            step = event.step or 0
            metrics.extend(MetricPoint(k, float(v), step, stamp) for k, v in values.items() if v is not None)
        self.tracker.log_batch(self.run_id, metrics=metrics)
        if fresh:
            self.logged_steps.update(e.step or 0 for e in fresh)
            self.last_step = max(self.logged_steps)

    def log_training(self, report: TrainingReport) -> None:
        """The overfitting check: ``best_epoch``, ``best_step``, ``stopped_early`` (0/1),
        ``validation_loss_rise`` (final vs best, relative), the losses, and every checkpoint."""
        metrics = [MetricPoint(k, v) for k, v in report.metrics().items()]
        tags = {"tuneops.training": report.summary()[:500]}
        self.tracker.log_batch(self.run_id, metrics=metrics, tags=tags)
        payload = json.dumps(report.to_dict(), indent=2, sort_keys=True).encode()
        self.tracker.log_bytes(self.run_id, payload, CHECKPOINTS_ARTIFACT)

    def log_finish(
        self, job: FineTuneJob, price_per_million: float, *, best: Checkpoint | None = None
    ) -> None:
        """Trained tokens, actual cost, the result model and a loss-curve PNG (``best`` marked)."""
        metrics = []
        if job.trained_tokens is not None:
            metrics = [
                MetricPoint("trained_tokens", job.trained_tokens),
                MetricPoint("cost_usd", job.trained_tokens * price_per_million / 1_000_000),
            ]
        if job.created_at is not None and job.finished_at is not None:
            # queue + training time at the provider, as it reports it (whole seconds)
            metrics.append(MetricPoint("provider_seconds", job.finished_at - job.created_at))
        tags = {"tuneops.job_status": str(job.status)}
        if job.endpoint_model:
            tags["tuneops.endpoint_model"] = job.endpoint_model
        if job.fine_tuned_model:
            tags["tuneops.fine_tuned_model"] = job.fine_tuned_model
        existing = self.tracker.params(self.run_id)
        params = {f"hp.{k}": v for k, v in job.hyperparameters.items() if f"hp.{k}" not in existing}
        self.tracker.log_batch(self.run_id, metrics=metrics, params=params, tags=tags)
        png = self.loss_curve_png(best)
        if png is not None:
            self.tracker.log_bytes(self.run_id, png, LOSS_CURVE_ARTIFACT)

    def loss_curve_png(self, best: Checkpoint | None = None) -> bytes | None:
        """The run's train/valid loss curves as a PNG (matplotlib, Agg backend), or None.

        ``best`` (the lowest-validation-loss checkpoint) is drawn as a vertical line: a
        validation curve rising after it is the picture of overfitting.
        """
        series = {k: self.tracker.metric_history(self.run_id, k) for k in ("train_loss", "valid_loss")}
        if not any(series.values()):
            return None
        from matplotlib.figure import Figure  # Agg by construction: no pyplot, no GUI backend

        figure = Figure(figsize=(6, 4), dpi=100)
        axes = figure.subplots()
        for name, history in series.items():
            points = sorted((m.step, m.value) for m in history)
            if points:
                axes.plot([p[0] for p in points], [p[1] for p in points], label=name, marker=".")
        if best is not None and best.valid_loss is not None:
            axes.axvline(best.step, color="green", linestyle="--", label=f"best: {describe(best)}")
            axes.plot([best.step], [best.valid_loss], marker="*", markersize=12, color="green")
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
        axes.legend()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
