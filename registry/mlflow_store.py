"""The MLflow adapter: registered models, versions, aliases, webhooks, experiments and run lookups.

Every MLflow error becomes a :class:`RegistryError` (``VersionNotFoundError`` when something
asked for does not exist) and every answer is one of our own types, so nothing outside
``registry/`` imports MLflow. Writing runs (params, metrics, artifacts, dataset inputs) is
:mod:`tuneops.registry.tracking`, on top of this store. The client is bound to explicit URIs and
private; the process-wide tracking URI is only switched, and restored, around the few fluent
calls that have no client form.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tuneops.errors import RegistryError, VersionNotFoundError
from tuneops.registry.conventions import TAG_JOB_ID
from tuneops.registry.types import RegisteredVersion
from tuneops.settings import TuneopsSettings

_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}


@dataclass(frozen=True)
class RunInput:
    """A dataset logged as an input of a run."""

    name: str
    digest: str
    source: str
    source_type: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def source_uri(self) -> str:
        """The store URI inside MLflow's JSON source description (``{"uri": ...}``)."""
        try:
            parsed = json.loads(self.source)
        except ValueError:
            return self.source
        if isinstance(parsed, dict):
            return str(parsed.get("uri") or parsed.get("url") or self.source)
        return self.source


@dataclass(frozen=True)
class RunSummary:
    """The parts of an MLflow run that lineage reports."""

    run_id: str
    experiment_id: str
    name: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    inputs: tuple[RunInput, ...] = ()
    start_time: datetime | None = None


_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _millis(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, tz=UTC)


def _is_not_found(exc: MlflowException) -> bool:
    return str(getattr(exc, "error_code", "")) in _NOT_FOUND_CODES


class RegistryStore:
    """MLflow tracking + registry, bound to one tracking URI and artifact root."""

    def __init__(self, tracking_uri: str, artifact_root: str | None = None, registry_uri: str | None = None):
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.artifact_root = artifact_root
        self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    @classmethod
    def from_settings(cls, settings: TuneopsSettings) -> RegistryStore:
        assert settings.tracking_uri is not None
        return cls(settings.tracking_uri, settings.artifact_root)

    @contextmanager
    def fluent(self) -> Iterator[None]:
        """Point MLflow's fluent API at this store for the duration of the block."""
        old_tracking, old_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
        # MLflow also writes these to os.environ, where child processes (and our settings, which
        # honour MLFLOW_TRACKING_URI) would pick up a default URI this block never meant to set.
        old_env = {key: os.environ.get(key) for key in _URI_ENV}
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(old_tracking)
            mlflow.set_registry_uri(old_registry)
            for key, value in old_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    @contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Translate MLflow failures of ``what`` into our exception tree."""
        try:
            yield
        except MlflowException as exc:
            if _is_not_found(exc):
                raise VersionNotFoundError(f"{what}: {exc.message}") from exc
            raise RegistryError(f"{what} failed in MLflow at {self.tracking_uri}: {exc.message}") from exc

    # -- registered models and versions -------------------------------------------------------

    def ensure_registered_model(self, name: str, description: str = "") -> None:
        """Create the registered model unless it exists already."""
        with self.errors(f"registered model {name!r}"):
            try:
                self._client.get_registered_model(name)
            except MlflowException as exc:
                if not _is_not_found(exc):
                    raise
                self._client.create_registered_model(name, description=description or None)

    def aliases(self, name: str) -> dict[str, str]:
        """Every alias of ``name`` now (alias -> version); empty when the model does not exist."""
        with self.errors(f"aliases of {name!r}"):
            try:
                model = self._client.get_registered_model(name)
            except MlflowException as exc:
                if _is_not_found(exc):
                    return {}
                raise
        return {str(alias): str(version) for alias, version in (model.aliases or {}).items()}

    def get_version(self, name: str, version: str) -> RegisteredVersion:
        with self.errors(f"model version {name}/{version}"):
            return self._ours(self._client.get_model_version(name, str(version)))

    def version_by_alias(self, name: str, alias: str) -> RegisteredVersion:
        """The version ``alias`` points at; MLflow answers an unknown alias with a 400, not a 404."""
        if alias not in self.aliases(name):
            raise VersionNotFoundError(f"model {name}@{alias} is not set")
        with self.errors(f"model {name}@{alias}"):
            return self._ours(self._client.get_model_version_by_alias(name, alias))

    def find_version_by_job(self, name: str, job_id: str) -> RegisteredVersion | None:
        """The oldest version of ``name`` made from fine-tune ``job_id``, if any."""
        query = f"name = {_quote(name)} and tags.`{TAG_JOB_ID}` = {_quote(job_id)}"
        with self.errors(f"versions of {name!r}"):
            found = list(self._client.search_model_versions(query))
        if not found:
            return None
        return self._ours(min(found, key=lambda v: int(v.version)))

    def versions(self, name: str) -> list[RegisteredVersion]:
        with self.errors(f"versions of {name!r}"):
            found = list(self._client.search_model_versions(f"name = {_quote(name)}"))
        return sorted((self._ours(v) for v in found), key=lambda v: int(v.version))

    def create_version(
        self,
        name: str,
        source: str,
        run_id: str,
        tags: dict[str, str],
        description: str,
        model_id: str | None,
    ) -> RegisteredVersion:
        # The registry resolves ``models:/m-...`` sources through the *process-wide* tracking store,
        # not the client's: without this it looks in ./mlflow.db and finds no logged model.
        with self.errors(f"registering a version of {name!r}"), self.fluent():
            created = self._client.create_model_version(
                name, source, run_id=run_id, tags=tags, description=description or None, model_id=model_id
            )
        return self._ours(created, created_now=True)

    def delete_version(self, name: str, version: str) -> None:
        with self.errors(f"deleting {name}/{version}"):
            self._client.delete_model_version(name, str(version))

    def set_alias(self, name: str, alias: str, version: str | None) -> None:
        """Point ``alias`` at ``version``, or remove it when ``version`` is None."""
        with self.errors(f"moving {name}@{alias}"):
            if version is None:
                self._client.delete_registered_model_alias(name, alias)
            else:
                self._client.set_registered_model_alias(name, alias, str(version))

    # -- webhooks -----------------------------------------------------------------------------

    def upsert_webhook(self, name: str, url: str, secret: str, events: list[Any]) -> str:
        """Create webhook ``name``, or repoint the existing one; returns its id."""
        with self.errors("installing the MLflow webhook"):
            for hook in self._client.list_webhooks():
                if hook.name == name:
                    self._client.update_webhook(hook.webhook_id, url=url, secret=secret, events=events)
                    return str(hook.webhook_id)
            created = self._client.create_webhook(name, url, events=events, secret=secret)
        return str(created.webhook_id)

    def _ours(self, mv: Any, *, created_now: bool = False) -> RegisteredVersion:
        return RegisteredVersion(
            model_name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id or None,
            source=mv.source or "",
            tags=dict(mv.tags or {}),
            aliases=tuple(mv.aliases or ()),
            created=created_now,
            description=mv.description or "",
            created_at=_millis(mv.creation_timestamp),
        )

    # -- experiments and runs -----------------------------------------------------------------

    def ensure_experiment(self, name: str) -> str:
        """The id of experiment ``name``, created with an artifact location under our root."""
        with self.errors(f"experiment {name!r}"):
            found = self._client.get_experiment_by_name(name)
            if found is not None:
                return str(found.experiment_id)
            location = f"{self.artifact_root.rstrip('/')}/{name}" if self.artifact_root else None
            try:
                return str(self._client.create_experiment(name, artifact_location=location))
            except MlflowException:
                found = self._client.get_experiment_by_name(name)  # lost a creation race
                if found is None:
                    raise
                return str(found.experiment_id)

    def find_runs(self, experiment_id: str, tags: dict[str, str]) -> list[RunSummary]:
        """Runs of the experiment carrying all of ``tags``, oldest first."""
        query = " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in tags.items())
        with self.errors(f"runs in experiment {experiment_id}"):
            runs = self._client.search_runs([experiment_id], filter_string=query, order_by=["start_time ASC"])
        return [self._run(r) for r in runs]

    def get_run(self, run_id: str) -> RunSummary:
        with self.errors(f"run {run_id}"):
            return self._run(self._client.get_run(run_id))

    def load_json_artifact(self, run_id: str, path: str) -> Any | None:
        """A JSON artifact of a run, or None when the run has no such file."""
        import mlflow.artifacts

        with self.errors(f"artifact {path} of run {run_id}"):
            folder, _, name = path.rpartition("/")
            if name not in {Path(f.path).name for f in self._client.list_artifacts(run_id, folder or None)}:
                return None
            with tempfile.TemporaryDirectory(prefix="tuneops-artifact-") as tmp:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=path, dst_path=tmp, tracking_uri=self.tracking_uri
                )
                return json.loads(Path(local).read_text(encoding="utf-8"))

    def _run(self, run: Any) -> RunSummary:
        inputs = tuple(
            RunInput(
                name=di.dataset.name,
                digest=di.dataset.digest,
                source=di.dataset.source,
                source_type=di.dataset.source_type,
                tags={t.key: t.value for t in di.tags},
            )
            for di in (run.inputs.dataset_inputs if run.inputs else [])
        )
        return RunSummary(
            run_id=run.info.run_id,
            experiment_id=str(run.info.experiment_id),
            name=run.info.run_name or "",
            status=run.info.status,
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.log-model")},
            inputs=inputs,
            start_time=_millis(run.info.start_time),
        )


def open_mlflow_store(tracking_uri: str) -> None:
    """Open (and on first use create) an MLflow store. A new SQLite store starts as a copy of the
    machine's migrated template; one MLflow had to create itself becomes the template."""
    from tuneops.state_templates import MLFLOW, save_template, seed_database

    sqlite = tracking_uri.startswith("sqlite:///")
    database = Path(tracking_uri.removeprefix("sqlite:///")) if sqlite else None
    seeded = database is not None and seed_database(MLFLOW, database)
    created = database is not None and not seeded and not database.exists()
    MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    if created and database is not None:
        save_template(MLFLOW, database)
