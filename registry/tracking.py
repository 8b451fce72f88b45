"""MLflow runs for every stage: start or find a run, log to it in batches, read it back.

The stages decide *what* a run records (which job events, which chart); this module is *how*:
one client bound to the store's URIs, params/metrics/tags in ``log_batch`` calls (per-call
logging is slow on a server, and a call takes at most 1,000 metrics), artifacts, metric history
and dataset inputs. It takes and returns our own types (:class:`MetricPoint`,
:class:`SplitInput`, :class:`~tuneops.registry.types.DatasetLink`) and every MLflow failure
becomes a :class:`~tuneops.errors.RegistryError` through :meth:`RegistryStore.errors`, so no
stage imports MLflow.

Dataset lineage: MLflow limits a dataset digest to 36 characters (``MAX_DATASET_DIGEST_SIZE``;
a VARCHAR(36) on PostgreSQL), so an input's digest is the first 36 hex digits of its split's
sha256 (:func:`mlflow_digest`) and the full sha256 rides along as the input tag
``tuneops.sha256``. ``search_runs(filter_string=f"dataset.digest = '{mlflow_digest(sha)}'")``
finds every run (fine-tune, evaluation, registration) that used a split.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.types import DatasetLink

MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000
MLFLOW_DIGEST_LENGTH = 36
TAG_SHA256 = "tuneops.sha256"
CONTEXT_TAG = "mlflow.data.context"
_REGISTRATION_CONTEXT = {"train": "training", "validation": "validation", "test": "testing"}


@dataclass(frozen=True)
class MetricPoint:
    """One metric value; ``timestamp_ms`` None means "now"."""

    key: str
    value: float
    step: int = 0
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class SplitInput:
    """One split as an MLflow dataset input: the name and context MLflow shows, and its tags.

    Build them with :func:`stage_inputs` or :func:`registration_inputs`, the two layouts lineage
    relies on; the digest, the source and the ``tuneops.sha256`` tag come from ``sha256``/``uri``.
    """

    name: str
    context: str
    sha256: str
    uri: str
    tags: Mapping[str, str] = field(default_factory=dict)


def mlflow_digest(sha256: str) -> str:
    """The form of a sha256 that fits MLflow's dataset digest column."""
    return sha256[:MLFLOW_DIGEST_LENGTH]


def dataset_source(uri: str) -> Any:
    """MLflow's dataset source for a store URI.

    A ``file://`` URI matches two of MLflow's source types equally well and MLflow warns about it
    on every call; the choice it makes is the right one, so the warning is only noise here.
    """
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        return resolve_dataset_source(uri)


def _facts(link: DatasetLink, *names: str) -> dict[str, str]:
    values = {
        "split": link.split,
        "version_uri": link.version_uri,
        "version_digest": link.version_digest,
        "rows": None if link.rows is None else str(link.rows),
        "tokens": None if link.tokens is None else str(link.tokens),
    }
    return {f"tuneops.{name}": str(values[name]) for name in names if values[name]}


def stage_inputs(links: Sequence[DatasetLink]) -> tuple[SplitInput, ...]:
    """Inputs of a stage's run (fine-tune, evaluation): named after the dataset, context = split."""
    return tuple(
        SplitInput(
            name=link.dataset_name,
            context=link.split,
            sha256=link.digest,
            uri=link.uri,
            tags=_facts(link, "version_digest", "rows", "tokens"),
        )
        for link in links
    )


def registration_inputs(links: Sequence[DatasetLink]) -> tuple[SplitInput, ...]:
    """Inputs of a registration run: one dataset per split (``<name>-<split>``), MLflow's contexts
    (``training``/``validation``/``testing``) and where the version lives, which lineage reads."""
    return tuple(
        SplitInput(
            name=f"{link.dataset_name or 'dataset'}-{link.split}",
            context=_REGISTRATION_CONTEXT.get(link.split, link.split),
            sha256=link.digest,
            uri=link.uri,
            tags=_facts(link, "split", "version_uri", "version_digest", "rows", "tokens"),
        )
        for link in links
    )


def _ms() -> int:
    return int(time.time() * 1000)


class RunTracker:
    """Writes and reads MLflow runs in the store's tracking server (explicit URIs, no globals)."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self._client = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.registry_uri)

    @classmethod
    def open(cls, tracking_uri: str, artifact_root: str | None = None) -> RunTracker:
        return cls(RegistryStore(tracking_uri, artifact_root))

    @property
    def tracking_uri(self) -> str:
        return self.store.tracking_uri

    # -- runs ---------------------------------------------------------------------------------

    def start_run(self, experiment: str, run_name: str, tags: Mapping[str, str] | None = None) -> str:
        """A new run in ``experiment`` (created under the artifact root if needed); its id."""
        experiment_id = self.store.ensure_experiment(experiment)
        with self.store.errors(f"starting run {run_name!r}"):
            run = self._client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
        return str(run.info.run_id)

    def find_or_start_run(
        self, experiment: str, run_name: str, *, key: Mapping[str, str], tags: Mapping[str, str] | None = None
    ) -> tuple[str, bool]:
        """The oldest run carrying all of ``key``, else a new one tagged ``key`` + ``tags``.

        Returns (run id, created): a re-run after a crash finds the run instead of making another.
        """
        found = self.store.find_runs(self.store.ensure_experiment(experiment), dict(key))
        if found:
            return found[0].run_id, False
        return self.start_run(experiment, run_name, {**key, **(tags or {})}), True

    def active_run_id(self) -> str | None:
        """The process's active run when it lives in this store (a caller's ``start_run`` block)."""
        import mlflow

        active = mlflow.active_run()
        if active is not None and mlflow.get_tracking_uri() == self.tracking_uri:
            return str(active.info.run_id)
        return None

    def params(self, run_id: str) -> dict[str, str]:
        """The params already logged (MLflow refuses to change one)."""
        return dict(self.store.get_run(run_id).params)

    def finish_run(self, run_id: str) -> None:
        with self.store.errors(f"ending run {run_id}"):
            self._client.set_terminated(run_id)

    # -- params, metrics, tags ----------------------------------------------------------------

    def log_batch(
        self,
        run_id: str,
        *,
        params: Mapping[str, object] | None = None,
        metrics: Sequence[MetricPoint] = (),
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Params, tags and the first 1,000 metrics in one call, the rest 1,000 a call.

        Param values are cut to MLflow's 6,000 characters.
        """
        from mlflow.entities import Metric, Param, RunTag

        if not (params or metrics or tags):
            return
        now = _ms()
        entities = [Metric(m.key, float(m.value), m.timestamp_ms or now, m.step) for m in metrics]
        first = entities[:MAX_METRICS_PER_BATCH]
        with self.store.errors(f"logging to run {run_id}"):
            self._client.log_batch(
                run_id,
                metrics=first,
                params=[Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in (params or {}).items()],
                tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
            )
            for start in range(MAX_METRICS_PER_BATCH, len(entities), MAX_METRICS_PER_BATCH):
                self._client.log_batch(run_id, metrics=entities[start : start + MAX_METRICS_PER_BATCH])

    def metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        with self.store.errors(f"history of {key} in run {run_id}"):
            history = self._client.get_metric_history(run_id, key)
        return [MetricPoint(m.key, m.value, m.step, m.timestamp) for m in history]

    # -- artifacts ----------------------------------------------------------------------------

    def log_file(self, run_id: str, path: Path, artifact_dir: str | None = None) -> None:
        with self.store.errors(f"logging {path.name} to run {run_id}"):
            self._client.log_artifact(run_id, str(path), artifact_path=artifact_dir)

    def log_bytes(self, run_id: str, data: bytes, artifact_path: str) -> None:
        """``data`` as the artifact file ``artifact_path`` (e.g. a PNG rendered by a stage)."""
        folder, _, name = artifact_path.rpartition("/")
        with tempfile.TemporaryDirectory(prefix="tuneops-artifact-") as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            self.log_file(run_id, path, folder or None)

    def log_text(self, run_id: str, text: str, artifact_path: str) -> None:
        with self.store.errors(f"logging {artifact_path} to run {run_id}"):
            self._client.log_text(run_id, text, artifact_path)

    def log_dict(self, run_id: str, data: Mapping[str, Any], artifact_path: str) -> None:
        with self.store.errors(f"logging {artifact_path} to run {run_id}"):
            self._client.log_dict(run_id, dict(data), artifact_path)

    def log_table(self, run_id: str, table: Mapping[str, list[Any]], artifact_path: str) -> None:
        """Columns of equal length, shown as a table in MLflow's UI (artifact ``*.json``)."""
        with self.store.errors(f"logging {artifact_path} to run {run_id}"):
            self._client.log_table(run_id, dict(table), artifact_path)

    def log_figure(self, run_id: str, figure: Any, artifact_path: str) -> None:
        """A matplotlib ``Figure`` as an image artifact."""
        with self.store.errors(f"logging {artifact_path} to run {run_id}"):
            self._client.log_figure(run_id, figure, artifact_path)

    # -- dataset inputs -----------------------------------------------------------------------

    def log_dataset_inputs(self, run_id: str, inputs: Sequence[SplitInput]) -> None:
        """Log splits as ``MetaDataset`` inputs of the run: source = store URI, digest =
        :func:`mlflow_digest` of the sha256, tags = context, ``tuneops.sha256`` and the input's own."""
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        entities = []
        for split in inputs:
            dataset = MetaDataset(  # type: ignore[abstract]  # MLflow's own class, profile is optional
                source=dataset_source(split.uri), name=split.name, digest=mlflow_digest(split.sha256)
            )
            tags = {CONTEXT_TAG: split.context, TAG_SHA256: split.sha256, **split.tags}
            entities.append(
                DatasetInput(
                    dataset=dataset._to_mlflow_entity(),
                    tags=[InputTag(key=k, value=v) for k, v in tags.items()],
                )
            )
        with self.store.errors(f"logging the dataset inputs of run {run_id}"):
            self._client.log_inputs(run_id, datasets=entities)

    def log_manifest(self, run_id: str, dataset_name: str, manifest: Mapping[str, Any]) -> None:
        """A dataset version's manifest as ``datasets/<name>/manifest.json``."""
        text = json.dumps(manifest, indent=2, sort_keys=True)
        self.log_text(run_id, text, f"datasets/{dataset_name}/manifest.json")
