"""Registration: one fine-tune job becomes one version of the spec's registered model.

Idempotent at every step, because a flow may be killed anywhere and re-run:

1. a version tagged ``tuneops.job_id = JOB`` exists -> return it, nothing new;
2. a registration run for JOB with a logged model exists (crash after logging) -> register it;
3. otherwise log a registration run (params, metrics, dataset inputs, the pyfunc model) and
   register its model with the ``tuneops.*`` version tags.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneops.errors import RegistryError, VersionNotFoundError
from tuneops.registry.conventions import (
    ALIASES,
    RUN_KIND_REGISTRATION,
    TAG_DATASET,
    TAG_ENDPOINT_MODEL,
    TAG_FINE_TUNED_MODEL,
    TAG_FINETUNE_RUN_ID,
    TAG_FLOW_RUN_ID,
    TAG_JOB_ID,
    TAG_PARENT_DATASET,
    TAG_PARENT_MODEL,
    TAG_PARENT_TRAIN_DIGEST,
    TAG_PARENT_VERSION,
    TAG_RUN_KIND,
    TAG_TRAIN_DIGEST,
    version_tags,
)
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.tracking import MetricPoint, RunTracker, registration_inputs
from tuneops.registry.types import RegisteredVersion, RegistrationRequest

TAG_MODEL_URI = "tuneops.model_uri"
TAG_MODEL_ID = "tuneops.model_id"


def model_config(request: RegistrationRequest) -> dict[str, Any]:
    """What the pyfunc model needs at load time; never a secret, only the key's variable name."""
    return {
        "base_url": request.endpoint_base_url,
        "model": request.endpoint_model,
        "api_key_env": request.api_key_env,
        "api_version": request.api_version,
        "max_tokens": 256,
        "temperature": 0.0,
    }


def register_model(request: RegistrationRequest, store: RegistryStore) -> RegisteredVersion:
    """Register the fine-tune in ``request``; return the version (``created`` False if it existed).

    Raises:
        RegistryError: MLflow failed; nothing half-registered is left that a re-run cannot finish.
    """
    existing = store.find_version_by_job(request.model_name, request.job_id)
    if existing is not None:
        return existing
    store.ensure_registered_model(request.model_name, request.description)
    experiment_id = store.ensure_experiment(request.experiment_name or request.model_name)
    logged = [
        run
        for run in store.find_runs(
            experiment_id, {TAG_JOB_ID: request.job_id, TAG_RUN_KIND: RUN_KIND_REGISTRATION}
        )
        if run.tags.get(TAG_MODEL_URI)
    ]
    if logged:
        run_id, model_uri, model_id = (
            logged[0].run_id,
            logged[0].tags[TAG_MODEL_URI],
            logged[0].tags.get(TAG_MODEL_ID),
        )
    else:
        run_id, model_uri, model_id = _log_registration_run(request, store)
    created = store.create_version(
        request.model_name,
        source=model_uri,
        run_id=run_id,
        tags=version_tags(request),
        description=request.description or f"fine-tune {request.job_id} of {request.base_model}",
        model_id=model_id,
    )
    winner = store.find_version_by_job(request.model_name, request.job_id)
    if winner is not None and winner.version != created.version:
        # A concurrent registration of the same job got there first: keep the oldest version only.
        store.delete_version(request.model_name, created.version)
        return winner
    return created


def _log_registration_run(request: RegistrationRequest, store: RegistryStore) -> tuple[str, str, str | None]:
    """Log the registration run and its pyfunc model; returns (run id, model URI, model id).

    Params and metrics go in one ``log_batch`` (per-call logging is slow on a server).
    """
    import mlflow
    import openai

    tags = {TAG_JOB_ID: request.job_id, TAG_RUN_KIND: RUN_KIND_REGISTRATION}
    if request.flow_run_id:
        tags[TAG_FLOW_RUN_ID] = request.flow_run_id
    if request.finetune_run_id:
        tags[TAG_FINETUNE_RUN_ID] = request.finetune_run_id
    tracker = RunTracker(store)
    run_id = tracker.start_run(
        request.experiment_name or request.model_name, f"register-{request.job_id}", tags
    )
    params = {f"hp.{k}": v for k, v in sorted(request.hyperparameters.items())}
    params.update(
        provider=request.provider, base_model=request.base_model, endpoint_model=request.endpoint_model
    )
    metrics = [
        MetricPoint(name, float(value))
        for name, value in (
            ("trained_tokens", request.trained_tokens),
            ("estimated_cost", request.estimated_cost),
        )
        if value is not None
    ]
    tracker.log_batch(run_id, metrics=metrics, params=params)
    tracker.log_dataset_inputs(run_id, registration_inputs(request.datasets))
    with (
        store.errors(f"logging the model of job {request.job_id}"),
        store.fluent(),
        mlflow.start_run(run_id=run_id),
    ):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("chat_model_code.py")),
            model_config=model_config(request),
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"openai=={openai.__version__}",
                "tuneops",
            ],
        )
    tracker.log_batch(run_id, tags={TAG_MODEL_URI: info.model_uri, TAG_MODEL_ID: info.model_id or ""})
    return run_id, info.model_uri, info.model_id or None


@dataclass(frozen=True)
class ParentModel:
    """The fine-tune a job continues from (``finetune.from``), and where it came from.

    ``model`` is the fine-tuned model id the new job is created with; ``version`` the registered
    version it is (None for an explicit id no version of this model has); ``dataset`` and
    ``train_digest`` the data that version was trained on, so lineage shows the chain.
    """

    model: str
    version: str | None = None
    alias: str | None = None
    dataset: str | None = None
    train_digest: str | None = None

    def tags(self) -> dict[str, str]:
        """The ``tuneops.parent_*`` tags of the version trained from this parent."""
        values = {
            TAG_PARENT_MODEL: self.model,
            TAG_PARENT_VERSION: self.version,
            TAG_PARENT_DATASET: self.dataset,
            TAG_PARENT_TRAIN_DIGEST: self.train_digest,
        }
        return {k: v for k, v in values.items() if v}


def _trained_model(version: RegisteredVersion) -> str | None:
    """The fine-tuned model id of a version (on Azure the endpoint model is a deployment name)."""
    return version.tags.get(TAG_FINE_TUNED_MODEL) or version.tags.get(TAG_ENDPOINT_MODEL)


def _parent_of(version: RegisteredVersion, alias: str | None) -> ParentModel:
    model = _trained_model(version)
    if not model:
        raise RegistryError(
            f"version {version.version} of {version.model_name} records no fine-tuned model to continue from",
            hint="continue from an explicit model instead: finetune.from: ft:...",
        )
    return ParentModel(
        model=model,
        version=version.version,
        alias=alias,
        dataset=version.tags.get(TAG_DATASET),
        train_digest=version.tags.get(TAG_TRAIN_DIGEST),
    )


def resolve_parent(store: RegistryStore, model_name: str, source: str) -> ParentModel:
    """What ``finetune.from: source`` names: an alias's version, or an explicit fine-tuned model id.

    An explicit id that is some version's fine-tuned model gets that version as its parent.

    Raises:
        VersionNotFoundError: the alias is not set (the message says which, and what to do).
        RegistryError: the version records no fine-tuned model.
    """
    if source in ALIASES:
        try:
            version = store.version_by_alias(model_name, source)
        except VersionNotFoundError as exc:
            raise VersionNotFoundError(
                f"finetune.from: {source}, but {model_name}@{source} is not set: there is no fine-tune to "
                "continue from",
                hint=f"promote a version first (tuneops promote {model_name} VERSION), or remove "
                "finetune.from to fine-tune the base model",
            ) from exc
        return _parent_of(version, source)
    registered = [v for v in store.versions(model_name) if _trained_model(v) == source]
    return _parent_of(registered[-1], None) if registered else ParentModel(model=source)


def warm_up_registration() -> None:
    """Do now, e.g. while a job trains, what makes a process's first registration slow.

    Imports MLflow's pyfunc flavour and GitPython (MLflow tags a model with the code's commit),
    then builds the module-to-package map ``log_model`` checks pip requirements against (~1 s;
    MLflow caches it). The map is a private helper of MLflow's: this is only an optimisation, so
    any failure is ignored and left for registration itself to meet.
    """
    for name in ("mlflow.pyfunc", "git"):
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    with contextlib.suppress(Exception):
        from mlflow.utils import requirements_utils

        requirements_utils._init_packages_to_modules_map()
