"""Pure decisions of the fine-tune stage: no SDK, no I/O, exhaustively unit-tested.

What lives here is what must never be wrong: the idempotency key that prevents duplicate jobs,
which existing job to reuse, how long to wait between attempts, and the cost guard.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tuneops.errors import BudgetExceededError
from tuneops.tasks.finetune.types import Deployment, FineTuneJob, JobStatus, TrainingEvent

IDEMPOTENCY_METADATA_KEY = "tuneops_idempotency_key"
"""Metadata key carrying the idempotency key on every job we create (≤ 64 chars, as OpenAI asks)."""

SUFFIX_MAX_CHARS = 40
"""Azure's limit for ``suffix`` (a-z, A-Z, 0-9, - and _); OpenAI allows 64, so 40 fits both."""
SUFFIX_TAG_PREFIX = "tk"
_SUFFIX_TAG_HEX = 12
_SUFFIX_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")

T = TypeVar("T")

AUTO_EPOCHS_ESTIMATE = 3
"""Epochs assumed for ``n_epochs: auto`` when estimating cost (OpenAI's usual choice for small sets)."""

_STATUS_ALIASES = {
    "validating_files": JobStatus.VALIDATING_FILES,
    "queued": JobStatus.QUEUED,
    "pending": JobStatus.PENDING,
    "notrunning": JobStatus.PENDING,
    "running": JobStatus.RUNNING,
    "paused": JobStatus.PAUSED,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
    "canceled": JobStatus.CANCELLED,
}
TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
LIVE = frozenset(
    {JobStatus.VALIDATING_FILES, JobStatus.QUEUED, JobStatus.PENDING, JobStatus.RUNNING, JobStatus.PAUSED}
)


def normalize_status(raw: str | None) -> JobStatus:
    """Map a provider's status string to ours; Azure's ``pending``/``notRunning`` become PENDING.

    An unknown string is UNKNOWN (treated as live), so a new provider state never ends a wait early.
    """
    if not raw:
        return JobStatus.UNKNOWN
    return _STATUS_ALIASES.get(raw.strip().lower().replace(" ", "_"), JobStatus.UNKNOWN)


def is_terminal(status: JobStatus) -> bool:
    """True when the job will not change any more."""
    return status in TERMINAL


def is_success(status: JobStatus) -> bool:
    """True only for a job that produced a model."""
    return status is JobStatus.SUCCEEDED


def idempotency_key(
    *,
    dataset_digests: Mapping[str, str],
    base_model: str,
    hyperparameters: Mapping[str, Any],
    model_name: str,
    suffix: str | None,
    seed: int,
    attempt: int = 1,
) -> str:
    """The sha256 naming one intended job; the same inputs always give the same key.

    Two runs with this key are the same job: the second must attach to the first, never create
    another. ``attempt`` is how a user deliberately asks for a new job after a failed one.
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    payload = {
        "dataset_digests": dict(sorted(dataset_digests.items())),
        "base_model": base_model,
        "hyperparameters": dict(sorted(hyperparameters.items())),
        "model_name": model_name,
        "suffix": suffix,
        "seed": seed,
        "attempt": attempt,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def suffix_tag(key: str) -> str:
    """The short form of an idempotency key carried in a job's ``suffix`` (48 bits of the sha256).

    For providers that do not echo ``metadata`` (Azure OpenAI's spec declares none): ``suffix``
    is declared on both job creation and the job, and ends up in the fine-tuned model's name.
    """
    return f"{SUFFIX_TAG_PREFIX}{key[:_SUFFIX_TAG_HEX]}"


def keyed_suffix(suffix: str | None, key: str) -> str:
    """The user's suffix (made safe, shortened) with the key's tag at the end, ≤ 40 characters."""
    tag = suffix_tag(key)
    head = _SUFFIX_UNSAFE.sub("-", suffix or "").strip("-_")[: SUFFIX_MAX_CHARS - len(tag) - 1]
    return f"{head}-{tag}" if head else tag


def carries_key(job: FineTuneJob, key: str) -> bool:
    """True when ``job`` was created for ``key``: by its metadata, or by the tag in its suffix
    (or in the fine-tuned model's name, for providers that echo the suffix only there)."""
    if job.metadata.get(IDEMPOTENCY_METADATA_KEY) == key:
        return True
    tag = suffix_tag(key)
    return any(tag in (text or "") for text in (job.suffix, job.fine_tuned_model))


@dataclass(frozen=True)
class Reconciliation:
    """What to do with the jobs already carrying our key: ``reuse`` one, or note a ``failed`` one."""

    reuse: FineTuneJob | None
    failed: FineTuneJob | None


def reconcile_jobs(jobs: Iterable[FineTuneJob], key: str) -> Reconciliation:
    """Pick the job to attach to among those found by the idempotency key.

    A succeeded job wins (nothing to do), then a live one (wait for it), newest first. A failed
    or cancelled job is never reused and never silently replaced: the caller reports it and the
    user asks for a new attempt. Jobs that do not carry ``key`` (``carries_key``) are ignored, so
    a provider that ignores the metadata filter cannot make us attach to a stranger's job.
    """
    mine = [j for j in jobs if carries_key(j, key)]
    mine.sort(key=lambda j: (j.created_at or 0, j.id), reverse=True)
    for wanted in (TERMINAL - {JobStatus.FAILED, JobStatus.CANCELLED}, set(LIVE) | {JobStatus.UNKNOWN}):
        for job in mine:
            if job.status in wanted:
                return Reconciliation(reuse=job, failed=None)
    failed = next((j for j in mine if j.status in {JobStatus.FAILED, JobStatus.CANCELLED}), None)
    return Reconciliation(reuse=None, failed=failed)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry transient provider errors."""

    max_attempts: int = 5
    base_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 60.0
    max_retry_after: float = 600.0


def retry_delay(policy: RetryPolicy, attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

    Exponential backoff, capped; a provider's Retry-After is honoured as a floor (never less than
    what it asked, up to ``max_retry_after``).
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    backoff = min(policy.max_delay, policy.base_delay * policy.factor ** (attempt - 1))
    if retry_after is not None and retry_after > 0:
        return max(backoff, min(retry_after, policy.max_retry_after))
    return backoff


def should_retry(policy: RetryPolicy, attempt: int) -> bool:
    """True while the retry budget allows another attempt after ``attempt`` failed ones."""
    return attempt < policy.max_attempts


@dataclass(frozen=True)
class PollPolicy:
    """How often to ask a provider about a job: start quick, slow down for long jobs."""

    initial: float = 2.0
    factor: float = 1.5
    max_interval: float = 30.0
    timeout: float | None = None


def poll_interval(policy: PollPolicy, polls: int, retry_after: float | None = None) -> float:
    """Seconds to wait after ``polls`` polls (from 0); a Retry-After is honoured as a floor."""
    interval = min(policy.max_interval, policy.initial * policy.factor ** max(polls, 0))
    return max(interval, retry_after or 0.0)


@dataclass(frozen=True)
class CostEstimate:
    """Estimated billable training tokens (tokens x epochs) and what they cost."""

    dataset_tokens: int
    epochs: int
    epochs_assumed: bool
    training_tokens: int
    cost_usd: float


def estimate_cost(dataset_tokens: int, n_epochs: int | str, price_per_million: float) -> CostEstimate:
    """Estimate a job's billable tokens; ``"auto"`` epochs count as ``AUTO_EPOCHS_ESTIMATE``."""
    assumed = not isinstance(n_epochs, int)
    epochs = AUTO_EPOCHS_ESTIMATE if assumed else int(n_epochs)
    tokens = max(dataset_tokens, 0) * epochs
    return CostEstimate(
        dataset_tokens=max(dataset_tokens, 0),
        epochs=epochs,
        epochs_assumed=assumed,
        training_tokens=tokens,
        cost_usd=tokens * price_per_million / 1_000_000,
    )


def enforce_budget(estimate: CostEstimate, max_training_tokens: int | None, spec_path: str = "") -> None:
    """Refuse (BudgetExceededError) a job whose estimated training tokens exceed the budget."""
    if max_training_tokens is None or estimate.training_tokens <= max_training_tokens:
        return
    where = f"{spec_path}: " if spec_path else ""
    assumed = " (assumed for n_epochs: auto)" if estimate.epochs_assumed else ""
    epochs = f"{estimate.epochs} epochs{assumed}"
    raise BudgetExceededError(
        f"{where}finetune.max_training_tokens is {max_training_tokens:,} but this job would train on "
        f"about {estimate.training_tokens:,} tokens ({estimate.dataset_tokens:,} tokens x {epochs}); "
        "no job was submitted",
        hint="raise finetune.max_training_tokens, lower n_epochs, or use a smaller dataset",
    )


def upload_filename(split: str, sha256: str) -> str:
    """The provider-side file name for a split: it carries the digest so an upload can be reused."""
    return f"tuneops-{split}-{sha256}.jsonl"


_UPLOAD_NAME = re.compile(r"^tuneops-(?P<split>[a-z]+)-(?P<sha>[0-9a-f]{64})\.jsonl$")


def digest_from_filename(filename: str) -> str | None:
    """The sha256 in a name made by ``upload_filename``; None for anybody else's file."""
    match = _UPLOAD_NAME.match(filename or "")
    return match.group("sha") if match else None


def new_metric_events(
    events: Iterable[TrainingEvent], after_step: int | Collection[int]
) -> list[TrainingEvent]:
    """Metrics events not logged yet, by step, one per step (the last one reported wins).

    ``after_step`` is either the highest step already logged, or the steps already logged (a
    collection): then an earlier step that a server reports late is still logged, exactly once.
    """

    def fresh(step: int) -> bool:
        return step > after_step if isinstance(after_step, int) else step not in after_step

    by_step: dict[int, TrainingEvent] = {}
    for event in sorted(events, key=lambda e: (e.created_at, e.id)):
        if event.step is not None and fresh(event.step):
            by_step[event.step] = event
    return [by_step[step] for step in sorted(by_step)]


def chronological(items: Sequence[T], created_at: Callable[[T], int | None]) -> list[T]:
    """``items`` oldest first, whatever order the server listed them in.

    Sorted by creation time (the only order the protocol gives a meaning to); items created in
    the same second keep the server's order, read backwards when the server lists newest first.
    """
    stamps = [created_at(item) or 0 for item in items]
    ordered = list(items)
    if len(stamps) > 1 and stamps[0] > stamps[-1]:
        ordered.reverse()
    return sorted(ordered, key=lambda item: created_at(item) or 0)


def unseen_events(events: Iterable[TrainingEvent], seen_ids: Collection[str]) -> list[TrainingEvent]:
    """Events whose id was not handed on before, in the order given (oldest first)."""
    return [event for event in events if event.id not in seen_ids]


_DEPLOYMENT_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


DEPLOYMENT_TAG_MANAGED = "tuneops-managed"
DEPLOYMENT_TAG_MODEL = "tuneops-model"
DEPLOYMENT_TAG_JOB = "tuneops-job-id"


def deployment_tags(model_name: str, job_id: str) -> dict[str, str]:
    """Resource tags on every deployment tuneops creates: how it knows which ones are its own."""
    return {DEPLOYMENT_TAG_MANAGED: "true", DEPLOYMENT_TAG_MODEL: model_name, DEPLOYMENT_TAG_JOB: job_id}


def is_managed_deployment(deployment: Deployment, model_name: str) -> bool:
    """True only for a deployment tuneops created for ``model_name`` (tagged by ``deployment_tags``)."""
    tags = deployment.tags
    return bool(tags.get(DEPLOYMENT_TAG_MANAGED) == "true" and tags.get(DEPLOYMENT_TAG_MODEL) == model_name)


def deployment_name(model_name: str, job_id: str) -> str:
    """A stable Azure deployment name for a job: PUT with it twice is the same deployment."""
    tail = _DEPLOYMENT_UNSAFE.sub("-", job_id.removeprefix("ftjob-"))[-24:]
    head = _DEPLOYMENT_UNSAFE.sub("-", model_name)[: 63 - len(tail)]
    return f"{head}-{tail}".strip("-.")


def failure_reason(job: FineTuneJob) -> str:
    """The provider's reason for a failed/cancelled job, or a plain statement when it gave none."""
    if job.error_message:
        return job.error_message
    return "cancelled" if job.status is JobStatus.CANCELLED else "the provider gave no reason"
