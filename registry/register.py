"""Registration: one fine-tune job becomes one version of the spec's registered model.

Idempotent at every step, because a flow may be killed anywhere and re-run:

1. a version tagged ``tuneops.job_id = JOB`` exists -> return it, nothing new;
2. a registration run for JOB with a logged model exists (crash after logging) -> register it;
3. otherwise log a registration run (params, metrics, dataset inputs, the pyfunc model) and
   register its model with the ``tuneops.*`` version tags.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tuneops.registry.conventions import (
    RUN_KIND_REGISTRATION,
    TAG_FINETUNE_RUN_ID,
    TAG_FLOW_RUN_ID,
    TAG_JOB_ID,
    TAG_RUN_KIND,
    version_tags,
)
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.types import DatasetLink, RegisteredVersion, RegistrationRequest
from tuneops.tasks.data.types import DatasetVersion

TAG_MODEL_URI = "tuneops.model_uri"
TAG_MODEL_ID = "tuneops.model_id"
TAG_SHA256 = "tuneops.sha256"
_SPLIT_CONTEXT = {"train": "training", "validation": "validation", "test": "testing"}


def links_from_version(version: DatasetVersion) -> tuple[DatasetLink, ...]:
    """The dataset links of a data-stage ``DatasetVersion``, one per split it has."""
    return tuple(
        DatasetLink(
            split=split.name,
            digest=split.sha256,
            uri=split.uri,
            dataset_name=version.name,
            version_digest=version.digest,
            version_uri=version.uri,
            rows=split.rows,
            tokens=split.tokens,
        )
        for split in version.splits.values()
    )


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
        run_id, model_uri, model_id = _log_registration_run(request, store, experiment_id)
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


def _log_registration_run(
    request: RegistrationRequest, store: RegistryStore, experiment_id: str
) -> tuple[str, str, str | None]:
    """Log the registration run and its pyfunc model; returns (run id, model URI, model id).

    Params and metrics go in one ``log_batch`` (per-call logging is slow on a server).
    """
    import mlflow
    import openai
    from mlflow.entities import Metric, Param, RunTag

    tags = {TAG_JOB_ID: request.job_id, TAG_RUN_KIND: RUN_KIND_REGISTRATION}
    if request.flow_run_id:
        tags[TAG_FLOW_RUN_ID] = request.flow_run_id
    if request.finetune_run_id:
        tags[TAG_FINETUNE_RUN_ID] = request.finetune_run_id
    client = store.client
    with store.errors(f"logging the registration run of job {request.job_id}"):
        run_id = client.create_run(
            experiment_id, run_name=f"register-{request.job_id}", tags=tags
        ).info.run_id
        now = int(time.time() * 1000)
        params = [Param(f"hp.{k}", str(v)[:6000]) for k, v in sorted(request.hyperparameters.items())]
        params += [
            Param("provider", request.provider),
            Param("base_model", request.base_model),
            Param("endpoint_model", request.endpoint_model),
        ]
        metrics = [
            Metric(name, float(value), now, 0)
            for name, value in (
                ("trained_tokens", request.trained_tokens),
                ("estimated_cost", request.estimated_cost),
            )
            if value is not None
        ]
        client.log_batch(run_id, metrics=metrics, params=params)
        with store.fluent(), mlflow.start_run(run_id=run_id):
            for link in request.datasets:
                _log_dataset(link)
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
        client.log_batch(
            run_id, tags=[RunTag(TAG_MODEL_URI, info.model_uri), RunTag(TAG_MODEL_ID, info.model_id or "")]
        )
    return run_id, info.model_uri, info.model_id or None


def _log_dataset(link: DatasetLink) -> None:
    """Log one split as a run input: digest = its sha256 (cut to MLflow's 36), source = store URI."""
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset

    from tuneops.tasks.data.tracking import dataset_source, mlflow_digest

    source = dataset_source(link.uri)
    name = f"{link.dataset_name or 'dataset'}-{link.split}"
    dataset = MetaDataset(source=source, name=name, digest=mlflow_digest(link.digest))  # type: ignore[abstract]
    input_tags = {TAG_SHA256: link.digest, "tuneops.split": link.split}
    if link.version_uri:
        input_tags["tuneops.version_uri"] = link.version_uri
    if link.version_digest:
        input_tags["tuneops.version_digest"] = link.version_digest
    for key, value in (("rows", link.rows), ("tokens", link.tokens)):
        if value is not None:
            input_tags[f"tuneops.{key}"] = str(value)
    mlflow.log_input(dataset, context=_SPLIT_CONTEXT.get(link.split, link.split), tags=input_tags)
