"""Glue between the stages of the ``retrain`` flow: small tasks that hand one stage's result to the next.

Each stage owns its logic; this module only maps typed results (dataset version, fine-tune job,
evaluation result) into the next stage's inputs, and finds what an earlier run already made so
that a re-run after a crash or a success repeats no work:

- the fine-tune's MLflow run is found by the job id before a new one is started;
- a job that is already a registered version is not evaluated or registered again.

It also loads the later stages' heavy libraries while a job trains (:func:`preload_later_stages`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tuneops.errors import DatasetError, VersionNotFoundError
from tuneops.providers import API_KEY_ENV
from tuneops.registry.conventions import CHALLENGER, CHAMPION, TAG_ENDPOINT_MODEL, TAG_JOB_ID, TAG_RUN_KIND
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.register import links_from_version
from tuneops.registry.types import RegisteredVersion, RegistrationRequest
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.data.types import DatasetVersion
from tuneops.tasks.evaluation.pipeline import BASE, CANDIDATE, EvaluationResult, model_under_test
from tuneops.tasks.evaluation.pipeline import CHAMPION as CHAMPION_LABEL
from tuneops.tasks.evaluation.types import ModelUnderTest
from tuneops.tasks.finetune.rules import is_terminal
from tuneops.tasks.finetune.types import FineTuneJob, InferenceTarget


@dataclass(frozen=True)
class Contenders:
    """The models one evaluation compares: the candidate, the base, and the champion if any."""

    candidate: ModelUnderTest
    base: ModelUnderTest
    champion: ModelUnderTest | None
    champion_version: str | None = None


@dataclass(frozen=True)
class RetrainOutcome:
    """What one ``retrain`` run did, for the summary and for tests.

    ``evaluation`` is None when the job was already registered by an earlier run (nothing new
    was evaluated or registered); ``registered.created`` tells whether this run made the version.
    """

    dataset: DatasetVersion
    job: FineTuneJob
    finetune_run_id: str
    registered: RegisteredVersion
    evaluation: EvaluationResult | None
    gate_passed: bool
    gate_reasons: tuple[str, ...]
    challenger_set: bool
    tracking_uri: str
    notes: tuple[str, ...] = field(default_factory=tuple)


@task(name="open-finetune-run", cache_policy=NO_CACHE)
def open_finetune_run(
    spec: Spec, settings: TuneopsSettings, job: FineTuneJob, dataset: DatasetVersion
) -> str:
    """The MLflow run that records this job: found by ``tuneops.job_id``, else started now.

    Dataset inputs are logged when the run is created, so each split is a lineage input of the
    run that trained on it.
    """
    from tuneops.tasks.data.tracking import log_dataset_inputs

    store = RegistryStore(settings.tracking_uri or "", settings.artifact_root)
    experiment_id = store.ensure_experiment(spec.model.name)
    found = store.find_runs(experiment_id, {TAG_JOB_ID: job.id, TAG_RUN_KIND: "finetune"})
    if found:
        return found[0].run_id
    client = store.client
    run = client.create_run(
        experiment_id,
        run_name=f"finetune-{job.id}",
        tags={TAG_JOB_ID: job.id, TAG_RUN_KIND: "finetune", "tuneops.dataset": dataset.ref},
    )
    with store.fluent():
        log_dataset_inputs(dataset, run.info.run_id)
    return str(run.info.run_id)


@task(name="find-registered-version", cache_policy=NO_CACHE)
def find_registered_version(
    spec: Spec, settings: TuneopsSettings, job: FineTuneJob
) -> RegisteredVersion | None:
    """The version an earlier run registered for ``job``, if any."""
    store = RegistryStore(settings.tracking_uri or "", settings.artifact_root)
    return store.find_version_by_job(spec.model.name, job.id)


@task(name="challenger-still-owed", cache_policy=NO_CACHE)
def challenger_still_owed(spec: Spec, settings: TuneopsSettings, version: RegisteredVersion) -> bool:
    """True when ``version`` passed its gate but ``challenger`` never pointed at it.

    That is a run killed between registering and moving the alias: the re-run owes the move. A
    version the ledger shows as challenger once is left alone, whatever people did with it since.
    """
    from tuneops.registry.ledger import Ledger

    if version.gate != "passed":
        return False
    ledger = Ledger.open(settings.state_db_url or "")
    try:
        history = ledger.history(spec.model.name, CHALLENGER)
    finally:
        ledger.close()
    return all(entry.to_version != version.version for entry in history)


@task(name="choose-contenders", cache_policy=NO_CACHE)
def choose_contenders(spec: Spec, settings: TuneopsSettings, target: InferenceTarget) -> Contenders:
    """Candidate (the fine-tune), base (production system prompt) and the current champion."""
    champion, champion_version = None, None
    store = RegistryStore(settings.tracking_uri or "", settings.artifact_root)
    try:
        current = store.version_by_alias(spec.model.name, CHAMPION)
    except VersionNotFoundError:
        current = None
    if current is not None and spec.evaluation.beat_champion:
        endpoint_model = current.tags.get(TAG_ENDPOINT_MODEL)
        if endpoint_model and endpoint_model != target.model:
            champion = model_under_test(spec, settings, CHAMPION_LABEL, endpoint_model)
            champion_version = current.version
    return Contenders(
        candidate=model_under_test(spec, settings, CANDIDATE, target.model),
        base=model_under_test(spec, settings, BASE, spec.model.base_model),
        champion=champion,
        champion_version=champion_version,
    )


def registration_request(
    spec: Spec,
    dataset: DatasetVersion,
    job: FineTuneJob,
    target: InferenceTarget,
    evaluation: EvaluationResult,
    *,
    finetune_run_id: str,
    flow_run_id: str | None,
    estimated_cost: float | None = None,
) -> RegistrationRequest:
    """Map the stages' results into what the registry needs (pure; the key's *name* only)."""
    return RegistrationRequest(
        model_name=spec.model.name,
        provider=spec.provider.kind,
        base_model=spec.model.base_model,
        endpoint_base_url=target.base_url,
        endpoint_model=target.model,
        job_id=job.id,
        api_key_env=API_KEY_ENV[spec.provider.kind],
        hyperparameters=dict(job.hyperparameters),
        trained_tokens=job.trained_tokens,
        estimated_cost=estimated_cost,
        datasets=links_from_version(dataset),
        eval_run_id=evaluation.mlflow_run_id,
        gate_passed=evaluation.passed,
        gate_reasons=tuple(evaluation.decision.reasons),
        flow_run_id=flow_run_id,
        finetune_run_id=finetune_run_id,
        description=spec.model.description or f"{spec.model.base_model} fine-tuned on {dataset.ref}",
        experiment_name=spec.model.name,
    )


def test_split_paths(dataset: DatasetVersion, settings: TuneopsSettings) -> tuple[Path, Path | None]:
    """Local paths of the test split (required) and the train split (few-shot source)."""
    from tuneops.tasks.data import materialize_split

    if dataset.split("test") is None:
        raise DatasetError(
            f"dataset {dataset.ref} has no test split to evaluate on",
            hint="give data.test in tuneops.yaml or a non-zero data.split.test",
        )
    train = Path(materialize_split(dataset, "train", settings)) if dataset.split("train") else None
    return Path(materialize_split(dataset, "test", settings)), train


# What evaluation and registration import on first use: azure-ai-evaluation's evaluators and
# NLTK (scoring), matplotlib's object API (loss curve, evaluation chart), MLflow's pyfunc flavour
# and GitPython (the registered model; MLflow tags it with the code's git commit). About 4 s.
LATER_STAGE_MODULES = (
    "azure.ai.evaluation",
    "nltk",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "mlflow.pyfunc",
    "git",
)


def _warm_mlflow_requirement_check() -> None:
    """``log_model`` checks the model's pip requirements against every installed distribution,
    building a module-to-package map first (~1 s); MLflow caches that map, so build it now."""
    from mlflow.utils import requirements_utils

    requirements_utils._init_packages_to_modules_map()


def preload_later_stages(job: FineTuneJob) -> threading.Thread | None:
    """Import the later stages' libraries in the background while ``job`` trains.

    Waiting on a job leaves this process idle (and the local service trains on one core), so
    the imports cost nothing there, instead of seconds between training and evaluation. Nothing
    is started for a job that has already ended: then the imports would only compete with the
    work that follows. Join the thread before that work, so no two threads import one module.
    """
    if is_terminal(job.status):
        return None

    def load() -> None:
        for name in LATER_STAGE_MODULES:
            with contextlib.suppress(Exception):  # the stage itself reports a missing library
                importlib.import_module(name)
        with contextlib.suppress(Exception):  # a private helper of MLflow's: only an optimisation
            _warm_mlflow_requirement_check()

    thread = threading.Thread(target=load, name="preload-later-stages", daemon=True)
    thread.start()
    return thread


def current_user() -> str:
    """Who is running the flow, for the ledger (the OS user, or the Prefect worker's)."""
    return os.environ.get("TUNEOPS_ACTOR") or os.environ.get("USER") or "tuneops"
