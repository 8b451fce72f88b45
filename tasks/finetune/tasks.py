"""Thin Prefect tasks of the fine-tune stage; the public API the ``retrain`` flow calls.

``submit_finetune`` and ``wait_for_finetune`` keep no Prefect result cache (``NO_CACHE``): the
provider is the source of truth, and a lookup by idempotency key makes a re-run after a crash,
at any point, attach to the job that exists instead of creating another. Prefect retries are off
too; transient errors are retried inside, with a look before every retry of a create.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tuneops.errors import FineTuneFailedError
from tuneops.providers import resolve_endpoint
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.data.types import DatasetVersion
from tuneops.tasks.finetune.checkpoints import TrainingReport, analyse_training
from tuneops.tasks.finetune.dataset import local_split_path
from tuneops.tasks.finetune.provider import FineTuneProvider, provider_for
from tuneops.tasks.finetune.rules import PollPolicy, RetryPolicy, deployment_name
from tuneops.tasks.finetune.submit import ESTIMATE_METADATA_KEY, TRAINED_SPLITS, cost_of, submit_job
from tuneops.tasks.finetune.types import FineTuneJob, InferenceTarget, TrainingEvent
from tuneops.tasks.finetune.wait import LoggedProgress, follow_job, progress_listener

if TYPE_CHECKING:
    from datetime import datetime

    from tuneops.registry.register import ParentModel
    from tuneops.tasks.finetune.lifecycle import RetirementReport

log = logging.getLogger(__name__)


def _estimated_tokens(job: FineTuneJob) -> int | None:
    """The estimate ``submit_job`` stored in the job's metadata (survives crashes and re-runs)."""
    raw = job.metadata.get(ESTIMATE_METADATA_KEY, "")
    return int(raw) if raw.isdigit() else None


def _provider(spec: Spec, settings: TuneopsSettings, provider: FineTuneProvider | None) -> FineTuneProvider:
    return provider or provider_for(spec.provider, settings)


def training_report_of(
    provider: FineTuneProvider, job: FineTuneJob, events: list[TrainingEvent] | None = None
) -> TrainingReport:
    """What the job's checkpoints say about overfitting (epochs from the events' step count)."""
    events = provider.list_events(job.id) if events is None else events
    total_steps = max((e.total_steps or 0 for e in events), default=0) or None
    epochs = job.hyperparameters.get("n_epochs")
    return analyse_training(
        provider.list_checkpoints(job.id),
        final_model=job.fine_tuned_model,
        epochs_requested=epochs if isinstance(epochs, int) else None,
        total_steps=total_steps,
    )


def read_training_report(
    spec: Spec, settings: TuneopsSettings, job: FineTuneJob, *, provider: FineTuneProvider | None = None
) -> TrainingReport:
    """The finished job's checkpoint report, read from the provider (plain function)."""
    chosen = _provider(spec, settings, provider)
    try:
        return training_report_of(chosen, job)
    finally:
        if provider is None:
            chosen.close()


def submit_job_for(
    spec: Spec,
    settings: TuneopsSettings,
    dataset: DatasetVersion,
    *,
    attempt: int = 1,
    retry: RetryPolicy | None = None,
    provider: FineTuneProvider | None = None,
    start_from: str | None = None,
) -> FineTuneJob:
    """Plain-function form of ``submit_finetune`` (no Prefect), for tests and other callers."""
    chosen = _provider(spec, settings, provider)
    try:
        paths = {
            split: local_split_path(dataset, split, settings)
            for split in TRAINED_SPLITS
            if dataset.split(split) is not None  # type: ignore[arg-type]
        }
        return submit_job(chosen, spec, dataset, paths, attempt=attempt, policy=retry, start_from=start_from)
    finally:
        if provider is None:
            chosen.close()


def wait_for_job(
    spec: Spec,
    settings: TuneopsSettings,
    job: FineTuneJob,
    *,
    dataset_ref: str = "",
    run_id: str | None = None,
    poll: PollPolicy | None = None,
    retry: RetryPolicy | None = None,
    provider: FineTuneProvider | None = None,
    estimate_from: DatasetVersion | None = None,
) -> FineTuneJob:
    """Plain-function form of ``wait_for_finetune``: follow, log to MLflow, deploy where needed."""
    from tuneops.tasks.finetune.tracking import FineTuneTracker

    chosen = _provider(spec, settings, provider)
    try:
        tracker = FineTuneTracker.open(settings, spec.model.name, run_id)
        estimated = cost_of(spec, estimate_from).training_tokens if estimate_from else _estimated_tokens(job)
        price = spec.finetune.price_per_million_training_tokens
        tracker.log_start(job, estimated, price, dataset_ref or job.metadata.get("tuneops_dataset", ""))
        seen: list[TrainingEvent] = []

        def on_events(events: list[TrainingEvent]) -> None:
            seen.extend(events)
            tracker.log_events(events)

        try:
            done = follow_job(chosen, job, poll=poll, retry=retry, on_events=on_events)
        except FineTuneFailedError:
            tracker.log_finish(chosen.get_job(job.id), spec.finetune.price_per_million_training_tokens)
            raise
        done = chosen.deploy(done, deployment_name(spec.model.name, done.id), model_name=spec.model.name)
        report = training_report_of(chosen, done, seen)
        log.info("fine-tune %s: %s", done.id, report.summary())
        tracker.log_training(report)
        tracker.log_finish(done, spec.finetune.price_per_million_training_tokens, best=report.best)
        return done
    finally:
        if provider is None:
            chosen.close()


@task(name="open-finetune-run", cache_policy=NO_CACHE)
def open_finetune_run(
    spec: Spec, settings: TuneopsSettings, job: FineTuneJob, dataset: DatasetVersion
) -> str:
    """The MLflow run that records ``job`` (found by its job id, else started with the dataset's
    splits as inputs); ``wait_for_finetune`` logs into it."""
    from tuneops.tasks.data.tracking import links_from_version
    from tuneops.tasks.finetune.tracking import open_job_run

    return open_job_run(
        settings,
        spec.model.name,
        job,
        dataset_ref=dataset.ref,
        datasets=links_from_version(dataset),
        manifest=dataset.manifest,
    )


@task(name="submit-finetune", cache_policy=NO_CACHE, retries=0)
def submit_finetune(
    spec: Spec,
    settings: TuneopsSettings,
    dataset: DatasetVersion,
    attempt: int = 1,
    start_from: str | None = None,
) -> FineTuneJob:
    """Submit the fine-tune job for ``dataset`` exactly once (attaches to an existing one).

    ``start_from``: a fine-tuned model to continue training (``finetune.from``), not the base.
    """
    return submit_job_for(spec, settings, dataset, attempt=attempt, start_from=start_from)


@task(name="resolve-parent-model", cache_policy=NO_CACHE, retries=0)
def resolve_parent_model(spec: Spec, settings: TuneopsSettings) -> ParentModel | None:
    """The fine-tune ``finetune.from`` names (an alias's version, or an explicit id); None: the base.

    Raises:
        VersionNotFoundError: the alias is not set; the message says what to do.
    """
    if spec.finetune.from_ is None:
        return None
    from tuneops.registry.mlflow_store import RegistryStore
    from tuneops.registry.register import resolve_parent

    parent = resolve_parent(RegistryStore.from_settings(settings), spec.model.name, spec.finetune.from_)
    where = f"version {parent.version} ({parent.alias or 'by id'})" if parent.version else "an explicit id"
    get_run_logger().info("continuing fine-tune %s, %s", parent.model, where)
    return parent


@task(name="wait-for-finetune", cache_policy=NO_CACHE, retries=0)
def wait_for_finetune(
    spec: Spec,
    settings: TuneopsSettings,
    job: FineTuneJob,
    run_id: str | None = None,
    poll_interval: float = 5.0,
    dataset: DatasetVersion | None = None,
    max_poll_interval: float = 30.0,
) -> FineTuneJob:
    """Follow ``job`` to success (MLflow metrics, cost, loss curve); deployed where needed.

    Raises FineTuneFailedError with the provider's reason when the job failed or was cancelled.
    """
    poll = PollPolicy(initial=poll_interval, max_interval=max(poll_interval, max_poll_interval))
    if progress_listener.get() is None:
        progress_listener.set(LoggedProgress(get_run_logger()))
    return wait_for_job(
        spec,
        settings,
        job,
        run_id=run_id,
        poll=poll,
        estimate_from=dataset,
        dataset_ref=dataset.ref if dataset else "",
    )


def retire_deployments_for(
    spec: Spec,
    settings: TuneopsSettings,
    *,
    keep: bool | None = None,
    now: datetime | None = None,
    provider: FineTuneProvider | None = None,
) -> RetirementReport:
    """Plain-function form of ``retire_deployments``: judge tuneops' deployments, delete the due.

    Only deployments tagged as tuneops' own for ``spec.model.name`` are judged or deleted; each
    deletion is logged with its reason. ``keep`` (default ``provider.keep_deployments``) judges
    and reports without deleting. Providers without deployments report nothing.
    """
    from datetime import UTC, datetime, timedelta

    from tuneops.registry.ledger import Ledger
    from tuneops.registry.mlflow_store import RegistryStore
    from tuneops.registry.promotion import reconcile
    from tuneops.tasks.finetune.lifecycle import RetirementReport, plan_retirement
    from tuneops.tasks.finetune.rules import is_managed_deployment

    name = spec.model.name
    config = spec.provider
    if resolve_endpoint(config, settings).client_kind != "azure":  # only Azure bills deployments
        return RetirementReport(name)
    keep = config.keep_deployments if keep is None else keep
    chosen = _provider(spec, settings, provider)
    try:
        mine = [d for d in chosen.list_deployments() if is_managed_deployment(d, name)]  # type: ignore[attr-defined]
        store = RegistryStore.from_settings(settings)
        ledger = Ledger.open(settings.state_db_url or "")
        try:
            reconcile(store, ledger, name)
            history = ledger.history(name)
            held = store.aliases(name)  # search results carry no aliases: ask for them
            versions = [
                dataclasses.replace(v, aliases=tuple(a for a, to in held.items() if to == v.version))
                for v in store.versions(name)
            ]
        finally:
            ledger.close()
        verdicts = plan_retirement(
            mine,
            versions,
            history,
            now=now or datetime.now(UTC),
            grace=timedelta(hours=config.deployment_grace_hours),
        )
        deleted: list[str] = []
        for verdict in verdicts:
            if not verdict.retire:
                continue
            where = f"deployment {verdict.deployment.name} (version {verdict.version or '-'})"
            if keep:
                log.info("keeping %s although %s (keep_deployments)", where, verdict.reason)
                continue
            if chosen.delete_deployment(verdict.deployment.name, model_name=name):  # type: ignore[attr-defined]
                deleted.append(verdict.deployment.name)
                log.warning("deleted %s: %s", where, verdict.reason)
        return RetirementReport(name, tuple(verdicts), tuple(deleted), keep, config.deployment_price_per_hour)
    finally:
        if provider is None:
            chosen.close()


@task(name="read-training-report", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def training_report(spec: Spec, settings: TuneopsSettings, job: FineTuneJob) -> TrainingReport:
    """The finished job's checkpoints: best epoch, stopped early, final-vs-best validation loss."""
    return read_training_report(spec, settings, job)


@task(name="retire-deployments", cache_policy=NO_CACHE, retries=0)
def retire_deployments(spec: Spec, settings: TuneopsSettings, keep: bool | None = None) -> RetirementReport:
    """Delete the provider deployments tuneops made that no longer earn their hourly bill.

    A version that failed the gate, or that has not been champion/challenger/previous for
    ``provider.deployment_grace_hours``, loses its deployment (``provider.keep_deployments`` or
    ``keep=True`` opts out). Safe to repeat: a deployment already gone is skipped.
    """
    report = retire_deployments_for(spec, settings, keep=keep)
    logger = get_run_logger()
    for verdict in report.due:
        done = "deleted" if verdict.deployment.name in report.deleted else "kept (opted out)"
        logger.info("deployment %s: %s; %s", verdict.deployment.name, verdict.reason, done)
    return report


def inference_target(spec: Spec, settings: TuneopsSettings, job: FineTuneJob) -> InferenceTarget:
    """Where evaluation calls the fine-tuned model (base_url, model id, Azure api_version)."""
    chosen = provider_for(spec.provider, settings)
    try:
        return chosen.inference_target(job)
    finally:
        chosen.close()
