"""Submitting a fine-tune job exactly once, whatever fails along the way.

The sequence, and why: look up a job carrying our idempotency key (a re-run after a crash or a
success attaches to it) → upload the files (reusing uploads of the same digest) → create the job
with one HTTP attempt → on a failure that may have created it anyway (timeout, dropped connection,
5xx), look up again *before* any retry. The SDK's own retries are off, so nothing is ever replayed
blindly. Works on any ``FineTuneProvider``; imports no SDK.

The key travels where the provider's protocol echoes it: ``metadata`` (OpenAI) or a tag in
``suffix`` (Azure OpenAI, whose spec declares no job metadata). The created job's echo is checked:
a server that silently drops the metadata would leave a job no re-run could find, so that job is
cancelled at once and created again with the key in its suffix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from tuneops.errors import FineTuneFailedError, TransientProviderError, UsageError
from tuneops.providers import is_local_provider
from tuneops.spec import Spec
from tuneops.tasks.data.types import DatasetVersion
from tuneops.tasks.finetune.provider import FineTuneProvider
from tuneops.tasks.finetune.rules import (
    CostEstimate,
    RetryPolicy,
    carries_key,
    enforce_budget,
    estimate_cost,
    failure_reason,
    idempotency_key,
    reconcile_jobs,
    retry_delay,
    should_retry,
)
from tuneops.tasks.finetune.types import FineTuneJob, FineTuneRequest

log = logging.getLogger(__name__)
T = TypeVar("T")
TRAINED_SPLITS = ("train", "validation")
ESTIMATE_METADATA_KEY = "tuneops_estimated_training_tokens"


def hyperparameters_for(spec: Spec) -> dict[str, Any]:
    """The hyperparameters to send: only those set to a value ("auto" is the provider's default).

    The local service also takes the spec's LoRA settings (``lora_r``, ``lora_alpha``,
    ``lora_dropout``, ``lora_target_modules``); cloud providers would reject them.
    """
    chosen = {k: v for k, v in spec.finetune.hyperparameters.model_dump().items() if v != "auto"}
    if is_local_provider(spec.provider):
        lora = spec.finetune.lora
        chosen.update(lora_r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout)
        if lora.target_modules:
            chosen["lora_target_modules"] = list(lora.target_modules)
    return chosen


def trained_digests(dataset: DatasetVersion) -> dict[str, str]:
    """The sha256 of every split the job trains on; the test split does not change the job."""
    return {name: split.sha256 for name, split in dataset.splits.items() if name in TRAINED_SPLITS}


def job_key(spec: Spec, dataset: DatasetVersion, attempt: int = 1, start_from: str | None = None) -> str:
    """The idempotency key of the job this spec and dataset ask for.

    ``start_from`` (a fine-tuned model the job continues, ``finetune.from``) takes the base
    model's place: continuing another parent on the same data is another job.
    """
    return idempotency_key(
        dataset_digests=trained_digests(dataset),
        base_model=start_from or spec.model.base_model,
        hyperparameters=hyperparameters_for(spec),
        model_name=spec.model.name,
        suffix=spec.finetune.suffix,
        seed=spec.finetune.seed,
        attempt=attempt,
    )


def cost_of(spec: Spec, dataset: DatasetVersion) -> CostEstimate:
    """Estimated training tokens and cost for this spec on this dataset."""
    train = dataset.split("train")
    return estimate_cost(
        train.tokens if train else 0,
        spec.finetune.hyperparameters.n_epochs,
        spec.finetune.price_per_million_training_tokens,
    )


def with_retries(
    action: Callable[[], T], policy: RetryPolicy, sleep: Callable[[float], None], what: str
) -> T:
    """Run a call that is safe to repeat (a read, or an upload that looks before it writes)."""
    attempt = 1
    while True:
        try:
            return action()
        except TransientProviderError as exc:
            if not should_retry(policy, attempt):
                raise _gave_up(exc, attempt, what) from exc
            delay = retry_delay(policy, attempt, exc.retry_after)
            log.warning("%s failed (%s); retrying in %.1f s", what, exc.message, delay)
            sleep(delay)
            attempt += 1


def _gave_up(exc: TransientProviderError, attempts: int, what: str) -> TransientProviderError:
    return TransientProviderError(
        f"{what}: gave up after {attempts} attempts; last error: {exc.message}",
        status_code=exc.status_code,
        retry_after=exc.retry_after,
        hint="the provider is failing or rate-limiting; re-run later (a re-run never creates a second job)",
    )


def submit_job(
    provider: FineTuneProvider,
    spec: Spec,
    dataset: DatasetVersion,
    split_paths: Mapping[str, Path],
    *,
    attempt: int = 1,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    start_from: str | None = None,
) -> FineTuneJob:
    """Return the one job for (spec, dataset, attempt): found again, or created exactly once.

    ``start_from`` is the fine-tuned model to continue (the job's ``model``), instead of the base.

    Raises:
        BudgetExceededError: the cost guard refused the job (nothing was sent).
        FineTuneFailedError: the job for this key already failed/was cancelled; ``attempt + 1``
            asks for a new one.
        TransientProviderError: the retry budget ran out.
    """
    policy = policy or RetryPolicy()
    if "train" not in split_paths or dataset.split("train") is None:
        raise UsageError(f"dataset {dataset.ref} has no train split to fine-tune on")
    estimate = cost_of(spec, dataset)
    enforce_budget(estimate, spec.finetune.max_training_tokens)
    key = job_key(spec, dataset, attempt, start_from)

    def find() -> list[FineTuneJob]:
        return provider.find_jobs(key)

    decision = reconcile_jobs(with_retries(find, policy, sleep, "looking up existing jobs"), key)
    if decision.reuse is not None:
        log.info("attaching to existing fine-tune job %s (%s)", decision.reuse.id, decision.reuse.status)
        return decision.reuse
    if decision.failed is not None:
        job = decision.failed
        raise FineTuneFailedError(
            f"fine-tune job {job.id} for this dataset and configuration ended {job.status}: "
            f"{failure_reason(job)}",
            hint=f"fix the cause, then re-run with --attempt {attempt + 1} to submit a new job",
        )
    uploads = {}
    for split in TRAINED_SPLITS:
        split_file = dataset.split(split)  # type: ignore[arg-type]
        if split_file is None or split not in split_paths:
            continue

        def upload(split: str = split, sha: str = split_file.sha256) -> Any:
            return provider.upload_file(split_paths[split], split=split, sha256=sha)

        uploads[split] = with_retries(upload, policy, sleep, f"uploading the {split} split")
    metadata = {
        "tuneops_model": spec.model.name[:512],
        "tuneops_dataset": dataset.ref[:512],
        "tuneops_attempt": str(attempt),
        ESTIMATE_METADATA_KEY: str(estimate.training_tokens),
    }
    if start_from:
        metadata["tuneops_from"] = start_from[:512]
    request = FineTuneRequest(
        base_model=start_from or spec.model.base_model,
        training_file=uploads["train"].id,
        validation_file=uploads["validation"].id if "validation" in uploads else None,
        hyperparameters=hyperparameters_for(spec),
        suffix=spec.finetune.suffix,
        seed=spec.finetune.seed,
        idempotency_key=key,
        metadata=metadata,
    )
    job = _create_once(provider, request, key, find, policy, sleep)
    if carries_key(job, key):
        return job
    if provider.sends_metadata:
        log.warning(
            "the provider did not echo the metadata of job %s: cancelling it and creating it again with "
            "the idempotency key in its suffix, so that a re-run can find it",
            job.id,
        )
        with_retries(lambda: provider.cancel_job(job.id), policy, sleep, f"cancelling job {job.id}")
        provider.sends_metadata = False
        job = _create_once(provider, request, key, find, policy, sleep)
        if carries_key(job, key):
            return job
    log.warning("job %s echoes neither metadata nor suffix: a re-run after a crash may not find it", job.id)
    return job


def _create_once(
    provider: FineTuneProvider,
    request: FineTuneRequest,
    key: str,
    find: Callable[[], list[FineTuneJob]],
    policy: RetryPolicy,
    sleep: Callable[[float], None],
) -> FineTuneJob:
    """Create with one attempt per try; after an ambiguous failure, look before trying again."""
    tries = 1
    while True:
        try:
            job = provider.create_job(request)
            log.info("created fine-tune job %s", job.id)
            return job
        except TransientProviderError as exc:
            if not should_retry(policy, tries):
                raise _gave_up(exc, tries, "creating the fine-tune job") from exc
            delay = retry_delay(policy, tries, exc.retry_after)
            log.warning("creating the job failed (%s); retrying in %.1f s", exc.message, delay)
            sleep(delay)
            if exc.ambiguous:
                decision = reconcile_jobs(with_retries(find, policy, sleep, "looking up existing jobs"), key)
                found = decision.reuse or decision.failed
                if found is not None:
                    log.info("the failed create had in fact created job %s", found.id)
                    return found
            tries += 1
