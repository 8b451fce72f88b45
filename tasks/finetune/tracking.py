"""MLflow side of the fine-tune stage: parameters, step metrics from job events, cost, loss curve.

Only values we choose are logged: the job's hyperparameters, ids, token counts and costs. Nothing
from settings is ever logged, so API keys cannot leak into the tracking store.
"""

from __future__ import annotations

import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from tuneops.errors import RegistryError
from tuneops.settings import TuneopsSettings
from tuneops.tasks.finetune.rules import new_metric_events
from tuneops.tasks.finetune.types import FineTuneJob, TrainingEvent

_BATCH = 1000
LOSS_CURVE_DIR = "finetune"
LOSS_CURVE_ARTIFACT = f"{LOSS_CURVE_DIR}/loss_curve.png"


@dataclass
class FineTuneTracker:
    """Logs one fine-tune job into one MLflow run."""

    client: MlflowClient
    run_id: str
    last_step: int = -1
    """Highest step already logged; -1 so a provider's step-0 (base model) validation loss is kept."""

    @classmethod
    def open(cls, settings: TuneopsSettings, experiment: str, run_id: str | None = None) -> FineTuneTracker:
        """Attach to ``run_id`` (or the active run), else start a run in ``experiment``."""
        import mlflow

        client = MlflowClient(tracking_uri=settings.tracking_uri)
        try:
            if run_id is None:
                active = mlflow.active_run()
                if active is not None and mlflow.get_tracking_uri() == settings.tracking_uri:
                    run_id = active.info.run_id
            if run_id is None:
                from tuneops.registry.mlflow_store import RegistryStore

                store = RegistryStore(settings.tracking_uri or "", settings.artifact_root)
                experiment_id = store.ensure_experiment(experiment)
                run_id = client.create_run(experiment_id, run_name="finetune").info.run_id
            history = [
                *client.get_metric_history(run_id, "train_loss"),
                *client.get_metric_history(run_id, "valid_loss"),
            ]
        except Exception as exc:  # MLflow raises many types; all mean the store is unusable
            raise RegistryError(f"MLflow at {settings.tracking_uri}: {exc}") from exc
        return cls(client=client, run_id=run_id, last_step=max((m.step for m in history), default=-1))

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
        existing = self.client.get_run(self.run_id).data.params
        fresh = [Param(k, str(v)) for k, v in params.items() if k not in existing]
        tags = [
            RunTag("tuneops.job_id", job.id),
            RunTag("tuneops.provider", job.provider),
            RunTag("tuneops.base_model", job.model),
        ]
        metrics = []
        if estimated_tokens is not None:
            now = _ms()
            metrics = [
                Metric("estimated_training_tokens", estimated_tokens, now, 0),
                Metric("estimated_cost_usd", estimated_tokens * price / 1_000_000, now, 0),
            ]
        self.client.log_batch(self.run_id, metrics=metrics, params=fresh, tags=tags)

    def log_events(self, events: list[TrainingEvent]) -> None:
        """Step metrics for metrics events not logged yet (a resumed wait does not log twice)."""
        fresh = new_metric_events(events, self.last_step)
        metrics: list[Metric] = []
        for event in fresh:
            stamp = event.created_at * 1000 if event.created_at else _ms()
            values = {"train_loss": event.train_loss, "valid_loss": event.valid_loss, **event.extra_metrics}
            step = event.step or 0
            metrics.extend(Metric(k, float(v), stamp, step) for k, v in values.items() if v is not None)
        for start in range(0, len(metrics), _BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + _BATCH])
        if fresh:
            self.last_step = max(e.step or 0 for e in fresh)

    def log_finish(self, job: FineTuneJob, price_per_million: float) -> None:
        """Trained tokens, actual cost, the result model and a loss-curve PNG."""
        now = _ms()
        metrics = []
        if job.trained_tokens is not None:
            metrics = [
                Metric("trained_tokens", job.trained_tokens, now, 0),
                Metric("cost_usd", job.trained_tokens * price_per_million / 1_000_000, now, 0),
            ]
        if job.created_at is not None and job.finished_at is not None:
            # queue + training time at the provider, as it reports it (whole seconds)
            metrics.append(Metric("provider_seconds", job.finished_at - job.created_at, now, 0))
        tags = [RunTag("tuneops.job_status", str(job.status))]
        if job.endpoint_model:
            tags.append(RunTag("tuneops.endpoint_model", job.endpoint_model))
        if job.fine_tuned_model:
            tags.append(RunTag("tuneops.fine_tuned_model", job.fine_tuned_model))
        existing = self.client.get_run(self.run_id).data.params
        params = [
            Param(f"hp.{k}", str(v)) for k, v in job.hyperparameters.items() if f"hp.{k}" not in existing
        ]
        self.client.log_batch(self.run_id, metrics=metrics, params=params, tags=tags)
        png = self.loss_curve_png()
        if png is not None:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / Path(LOSS_CURVE_ARTIFACT).name
                path.write_bytes(png)
                self.client.log_artifact(self.run_id, str(path), artifact_path=LOSS_CURVE_DIR)

    def loss_curve_png(self) -> bytes | None:
        """The run's train/valid loss curves as a PNG (matplotlib, Agg backend), or None."""
        series = {k: self.client.get_metric_history(self.run_id, k) for k in ("train_loss", "valid_loss")}
        if not any(series.values()):
            return None
        from matplotlib.figure import Figure  # Agg by construction: no pyplot, no GUI backend

        figure = Figure(figsize=(6, 4), dpi=100)
        axes = figure.subplots()
        for name, history in series.items():
            points = sorted((m.step, m.value) for m in history)
            if points:
                axes.plot([p[0] for p in points], [p[1] for p in points], label=name, marker=".")
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
        axes.legend()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()


def _ms() -> int:
    return int(time.time() * 1000)
