"""What the ``retrain`` flow needs beside the stages' tasks: its result type, the mapping of the
stages' results into a registration request, and loading later stages while a job trains.

Each stage owns its logic; the glue here only maps typed results from one stage to the next.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import threading
from dataclasses import dataclass, field

from tuneops.providers import API_KEY_ENV
from tuneops.registry import conventions as c
from tuneops.registry.conventions import TAG_TRAIN_DIGEST
from tuneops.registry.register import ParentModel
from tuneops.registry.types import RegisteredVersion, RegistrationRequest
from tuneops.spec import Spec
from tuneops.tasks.data.tracking import links_from_version
from tuneops.tasks.data.types import DatasetVersion
from tuneops.tasks.evaluation.pipeline import EvaluationResult
from tuneops.tasks.finetune.checkpoints import TrainingReport
from tuneops.tasks.finetune.rules import is_terminal
from tuneops.tasks.finetune.types import FineTuneJob, InferenceTarget


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
    training: TrainingReport | None = None
    parent: ParentModel | None = None


DRIFT_REASON_PREFIX = "drift"
NO_NEW_DATA = "drift detected, no new data"


@dataclass(frozen=True)
class RetrainSkipped:
    """A retrain that trained nothing, and why (e.g. drift detected but the data did not change).

    ``trained_version`` is the registered version already trained on this exact training split.
    """

    dataset: DatasetVersion
    reason: str
    message: str
    trained_version: str | None = None


def is_drift_reason(reason: str) -> bool:
    """Whether a run's ``reason`` says the drift trigger started it (``drift: <summary>``)."""
    return reason.strip().lower().startswith(DRIFT_REASON_PREFIX)


def version_trained_on(versions: list[RegisteredVersion], train_sha256: str | None) -> str | None:
    """The newest registered version whose training split is ``train_sha256`` (pure)."""
    if not train_sha256:
        return None
    trained = [v for v in versions if v.tags.get(TAG_TRAIN_DIGEST) == train_sha256]
    return max(trained, key=lambda v: int(v.version)).version if trained else None


def no_new_data(
    reason: str, dataset: DatasetVersion, versions: list[RegisteredVersion]
) -> RetrainSkipped | None:
    """The skip result when drift started this run and a version was already trained on this data.

    Only a drift-triggered run is skipped: a scheduled or manual run on unchanged data still goes
    through (and finds its job registered already, training nothing new either).
    """
    if not is_drift_reason(reason):
        return None
    train = dataset.split("train")
    trained = version_trained_on(versions, train.sha256 if train else None)
    if trained is None:
        return None
    return RetrainSkipped(
        dataset=dataset,
        reason=reason,
        message=f"{NO_NEW_DATA}: {dataset.ref} is what version {trained} was trained on; nothing trained",
        trained_version=trained,
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
    training: TrainingReport | None = None,
    parent: ParentModel | None = None,
) -> RegistrationRequest:
    """Map the stages' results into what the registry needs (pure; the key's *name* only).

    The registered model is the one the evaluation gated (a checkpoint, with
    ``evaluation.checkpoints: best | all``); its checkpoint, the job's overfitting check and the
    parent it was continued from (``finetune.from``) become version tags.
    """
    model = evaluation.candidate_model
    extra = {c.TAG_DATASET: dataset.ref, **(parent.tags() if parent else {})}
    if job.fine_tuned_model:
        extra[c.TAG_FINE_TUNED_MODEL] = job.fine_tuned_model
    if training is not None:
        extra.update(training_tags(training, model))
    return RegistrationRequest(
        model_name=spec.model.name,
        provider=spec.provider.kind,
        base_model=spec.model.base_model,
        endpoint_base_url=target.base_url,
        endpoint_model=model,
        job_id=job.id,
        api_key_env=API_KEY_ENV[spec.provider.kind],
        api_version=target.api_version,  # Azure: the registered model calls the deployment with it
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
        extra_tags=extra,
    )


def training_tags(training: TrainingReport, model: str) -> dict[str, str]:
    """Which checkpoint ``model`` is and what the job's checkpoints said (pure)."""
    tags = {c.TAG_TRAINING: training.summary()}
    checkpoint = training.checkpoint_of(model)
    tags[c.TAG_CHECKPOINT] = "final" if model == training.final_model else model
    if checkpoint is not None:
        tags[c.TAG_CHECKPOINT_STEP] = str(checkpoint.step)
        if checkpoint.epoch is not None:
            tags[c.TAG_CHECKPOINT_EPOCH] = str(checkpoint.epoch)
    best, rise = training.best, training.rise_of(model)
    if best is not None:
        tags[c.TAG_BEST_STEP] = str(best.step)
        if best.epoch is not None:
            tags[c.TAG_BEST_EPOCH] = str(best.epoch)
    if rise is not None:
        tags[c.TAG_VALIDATION_LOSS_RISE] = f"{rise:.6g}"
    if training.stopped_early is not None:
        tags[c.TAG_STOPPED_EARLY] = str(training.stopped_early).lower()
    return tags


def training_at(training: TrainingReport, target: InferenceTarget) -> TrainingReport:
    """The report with the final model named as inference calls it (Azure: the deployment)."""
    if training.final_model == target.model:
        return training
    return dataclasses.replace(training, final_model=target.model)


# What evaluation imports on first use: azure-ai-evaluation's evaluators and NLTK (scoring),
# matplotlib's object API (loss curve, evaluation chart). Registration's own (MLflow's pyfunc
# flavour, GitPython) come from the registry's warm-up. About 4 s in all.
EVALUATION_MODULES = (
    "azure.ai.evaluation",
    "nltk",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
)


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
        for name in EVALUATION_MODULES:
            with contextlib.suppress(Exception):  # the stage itself reports a missing library
                importlib.import_module(name)
        with contextlib.suppress(Exception):
            from tuneops.registry.register import warm_up_registration

            warm_up_registration()

    thread = threading.Thread(target=load, name="preload-later-stages", daemon=True)
    thread.start()
    return thread
