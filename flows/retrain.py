"""The ``retrain`` flow: the whole loop a user runs with ``tuneops run``.

version data → fine-tune → evaluate vs base (+ champion) → gate → register → set ``challenger``

Every step is safe to repeat: versioning is content-addressed, the fine-tune is found by its
idempotency key, its MLflow run by its job id, and a job that is already a registered version is
neither evaluated nor registered again. So killing the flow anywhere and re-running it finishes
the same work without duplicates, and re-running on unchanged data and spec trains nothing new.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from tuneops.flows.retrain_steps import (
    RetrainOutcome,
    RetrainSkipped,
    is_drift_reason,
    no_new_data,
    preload_later_stages,
    registration_request,
    training_at,
)
from tuneops.providers import is_local_provider
from tuneops.registry.ledger import current_actor
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.tasks import (
    challenger_still_owed,
    find_registered_version,
    register_model_task,
    set_challenger_task,
)
from tuneops.settings import TuneopsSettings
from tuneops.spec import load_spec
from tuneops.tasks.data.tasks import version_dataset
from tuneops.tasks.data.types import DatasetVersion
from tuneops.tasks.evaluation.inputs import choose_contenders, evaluation_split_paths
from tuneops.tasks.evaluation.tasks import evaluate_candidate_task
from tuneops.tasks.finetune.submit import cost_of
from tuneops.tasks.finetune.tasks import (
    inference_target,
    open_finetune_run,
    resolve_parent_model,
    retire_deployments,
    submit_finetune,
    training_report,
    wait_for_finetune,
)

# Polling the local service costs nothing, and every second between the job's end and the next
# poll is idle time for the whole run; a cloud provider is asked less often as a job runs long.
LOCAL_MAX_POLL_S, CLOUD_MAX_POLL_S = 2.0, 30.0


@flow(name="retrain", validate_parameters=True)
def retrain(
    spec_path: str = "tuneops.yaml",
    reason: str = "manual",
    poll_interval: float = 2.0,
    show_progress: bool = False,
) -> RetrainOutcome | RetrainSkipped:
    """Fine-tune the spec's model on its current data and register it if it beats the base.

    A run the drift trigger started (``reason`` ``drift: ...``) on data a registered version was
    already trained on trains nothing and returns :class:`RetrainSkipped` ("drift detected, no
    new data"): retraining on the same data cannot answer drift.

    Args:
        spec_path: the project's ``tuneops.yaml``; settings come from its folder and environment.
        reason: why this run happens (``manual``, ``schedule``, ``drift: ...``), recorded in MLflow.
        poll_interval: seconds between the first fine-tune status polls (backs off to 30 s).
        show_progress: draw progress bars (the CLI does; deployments do not).
    """
    log = get_run_logger()
    spec, project_dir = load_spec(Path(spec_path))
    settings = TuneopsSettings.load(project_dir)

    dataset = version_dataset(spec, settings)
    skipped = _skip_when_no_new_data(spec.model.name, reason, dataset, settings)
    if skipped is not None:
        return skipped
    parent = resolve_parent_model(spec, settings)  # finetune.from: continue that fine-tune
    job = submit_finetune(spec, settings, dataset, start_from=parent.model if parent else None)
    finetune_run_id = open_finetune_run(spec, settings, job, dataset)
    preloading = preload_later_stages(job)  # evaluation's libraries load while the job trains
    job = wait_for_finetune(
        spec,
        settings,
        job,
        run_id=finetune_run_id,
        poll_interval=poll_interval,
        dataset=dataset,
        max_poll_interval=LOCAL_MAX_POLL_S if is_local_provider(spec.provider) else CLOUD_MAX_POLL_S,
    )
    if preloading is not None:
        preloading.join()

    already = find_registered_version(
        spec.model.name,
        job.id,
        tracking_uri=settings.tracking_uri or "",
        artifact_root=settings.artifact_root,
    )
    if already is not None:
        log.info("job %s is already registered as version %s: nothing new to do", job.id, already.version)
        owed = challenger_still_owed(already, state_db_url=settings.state_db_url or "")
        if owed:  # the run that registered it was stopped before moving the alias
            resumed = f"{reason}; finished after an interrupted run"
            _set_challenger(spec.model.name, already.version, settings, resumed)
        if already.gate == "failed":  # its deployment may have outlived an interrupted run
            retire_deployments(spec, settings)
        return RetrainOutcome(
            dataset=dataset,
            job=job,
            finetune_run_id=finetune_run_id,
            registered=already,
            evaluation=None,
            gate_passed=already.gate == "passed",
            gate_reasons=(),
            challenger_set=owed or "challenger" in already.aliases,
            tracking_uri=settings.tracking_uri or "",
            notes=(f"{job.id} was registered by an earlier run",),
        )

    target = inference_target(spec, settings, job)
    training = training_at(training_report(spec, settings, job), target)
    contenders = choose_contenders(spec, settings, target, training)
    test_split, train_split = evaluation_split_paths(dataset, settings)
    flow_run_id = str(flow_run.get_id() or "")
    evaluation = evaluate_candidate_task(
        spec,
        settings,
        test_split,
        contenders.candidate,
        contenders.base,
        contenders.champion,
        dataset.digest,
        train_split,
        extra_tags={"tuneops.flow_run_id": flow_run_id, "tuneops.job_id": job.id, "tuneops.reason": reason},
        show_progress=show_progress,
        training=training,
    )

    request = registration_request(
        spec,
        dataset,
        job,
        target,
        evaluation,
        finetune_run_id=finetune_run_id,
        flow_run_id=flow_run_id,
        estimated_cost=cost_of(spec, dataset).cost_usd,
        training=training,
        parent=parent,
    )
    registered = register_model_task(request, settings.tracking_uri or "", settings.artifact_root)
    challenger_set = False
    if evaluation.passed:
        _set_challenger(spec.model.name, registered.version, settings, reason)
        challenger_set = True
    else:
        log.warning("gate failed for %s: %s", evaluation.candidate_model, evaluation.decision.summary())
    retire_deployments(spec, settings)  # Azure bills deployments hourly: drop the failed and the idle
    return RetrainOutcome(
        dataset=dataset,
        job=job,
        finetune_run_id=finetune_run_id,
        registered=registered,
        evaluation=evaluation,
        gate_passed=evaluation.passed,
        gate_reasons=tuple(evaluation.decision.reasons),
        challenger_set=challenger_set,
        tracking_uri=settings.tracking_uri or "",
        training=training,
        parent=parent,
    )


def _skip_when_no_new_data(
    model_name: str, reason: str, dataset: DatasetVersion, settings: TuneopsSettings
) -> RetrainSkipped | None:
    """A drift-triggered run on data some version was already trained on trains nothing."""
    if not is_drift_reason(reason):
        return None
    store = RegistryStore.from_settings(settings)
    skipped = no_new_data(reason, dataset, store.versions(model_name))
    if skipped is not None:
        get_run_logger().warning("%s (%s)", skipped.message, reason)
        create_markdown_artifact(
            f"# Retrain skipped\n\n{skipped.message}\n\nTriggered by: {reason}\n",
            key=f"retrain-{model_name}".lower().replace(".", "-").replace("_", "-"),
            description=skipped.message[:500],
        )
    return skipped


def _set_challenger(model_name: str, version: str, settings: TuneopsSettings, reason: str) -> None:
    """Point ``challenger`` at a version whose gate passed, with the run's reason in the ledger."""
    set_challenger_task(
        model_name,
        version,
        tracking_uri=settings.tracking_uri or "",
        state_db_url=settings.state_db_url or "",
        reason=f"gate passed ({reason})",
        actor=current_actor(),
    )
