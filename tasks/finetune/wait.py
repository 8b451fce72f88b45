"""Following a fine-tune job to its end: poll with backoff, hand new events on, judge the outcome.

Transient provider errors while polling (429 with Retry-After, 5xx, dropped connections) are
waited out within a retry budget; they never end the wait early. A failed or cancelled job raises
``FineTuneFailedError`` with the provider's reason. Imports no SDK.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextvars import ContextVar

from tuneops.errors import FineTuneFailedError, ProviderError, TransientProviderError
from tuneops.tasks.finetune.provider import FineTuneProvider
from tuneops.tasks.finetune.rules import (
    PollPolicy,
    RetryPolicy,
    failure_reason,
    is_success,
    is_terminal,
    poll_interval,
    retry_delay,
    should_retry,
    unseen_events,
)
from tuneops.tasks.finetune.types import FineTuneJob, TrainingEvent

log = logging.getLogger(__name__)

ProgressListener = Callable[[FineTuneJob, list[TrainingEvent]], None]
progress_listener: ContextVar[ProgressListener | None] = ContextVar("finetune_progress", default=None)
"""Set by the CLI to draw live progress; the flow and tasks run in its context."""


class LoggedProgress:
    """A progress listener that writes to a logger: each status change, the provider's messages,
    and the newest step and losses at most every ``every`` seconds, so an unattended run (a
    deployment, ``tuneops run``) shows that training moves without flooding its log."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter, every: float = 15.0,  # type: ignore[type-arg]
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.logger, self.every, self.clock = logger, every, clock
        self.status: str | None = None
        self.last_said = float("-inf")
        self.first_step: TrainingEvent | None = None

    def __call__(self, job: FineTuneJob, events: list[TrainingEvent]) -> None:
        if job.status != self.status:
            self.status = job.status
            self.logger.info("fine-tune %s is %s", job.id, job.status)
        for event in events:  # the provider's own words: epochs, checkpoints, building a base model
            if not event.is_metrics and event.message:
                self.logger.info("%s", event.message)
        steps = [e for e in events if e.is_metrics and e.train_loss is not None]
        if steps and self.first_step is None:
            self.first_step = min(steps, key=lambda e: e.step or 0)
        if steps and self.clock() - self.last_said >= self.every:
            latest = max(steps, key=lambda e: e.step or 0)
            total = f"/{latest.total_steps}" if latest.total_steps else ""
            valid = f", valid_loss {latest.valid_loss:.3f}" if latest.valid_loss is not None else ""
            pace = training_pace(self.first_step, latest)
            self.logger.info(
                "step %s%s: train_loss %.3f%s%s", latest.step, total, latest.train_loss, valid, pace
            )
            self.last_said = self.clock()


def training_pace(first: TrainingEvent | None, latest: TrainingEvent) -> str:
    """``, 18.2 s/step, about 3 min left`` from the provider's own step timestamps (empty until
    two steps a second apart are known); tokens/s too when the provider reports its throughput."""
    if first is None or not (first.created_at and latest.created_at and latest.step and first.step):
        return ""
    steps, seconds = latest.step - first.step, latest.created_at - first.created_at
    if steps <= 0 or seconds <= 0:
        return ""
    per_step = seconds / steps
    text = f", {per_step:.1f} s/step"
    rate = latest.extra_metrics.get("tokens_per_second")
    if rate:
        text += f", {rate:,.0f} tokens/s"
    if latest.total_steps and latest.total_steps > latest.step:
        left = per_step * (latest.total_steps - latest.step)
        text += f", about {left / 60:.0f} min left" if left >= 90 else f", about {left:.0f} s left"
    return text


def follow_job(
    provider: FineTuneProvider,
    job: FineTuneJob,
    *,
    poll: PollPolicy | None = None,
    retry: RetryPolicy | None = None,
    on_events: Callable[[list[TrainingEvent]], None] | None = None,
    on_update: ProgressListener | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> FineTuneJob:
    """Poll ``job`` until it ends; return it when it succeeded.

    Args:
        on_events: receives each batch of new events, oldest first (MLflow logging).
        on_update: receives the job and its new events after every poll (progress display).

    Raises:
        FineTuneFailedError: the job ended failed or cancelled (message has the provider's reason).
        TransientProviderError: the provider kept failing past the retry budget.
        ProviderError: ``poll.timeout`` passed; re-running resumes waiting on the same job.
    """
    poll, retry = poll or PollPolicy(), retry or RetryPolicy()
    started, polls, failures = clock(), 0, 0
    seen: set[str] = set()
    listener = on_update or progress_listener.get()
    current = job
    while True:
        try:
            current = provider.get_job(job.id)
            events = unseen_events(provider.list_events(job.id), seen)
        except TransientProviderError as exc:
            failures += 1
            if not should_retry(retry, failures):
                raise TransientProviderError(
                    f"following job {job.id}: gave up after {failures} failed polls; last: {exc.message}",
                    status_code=exc.status_code,
                    hint="the job keeps running at the provider; re-run to resume waiting on it",
                ) from exc
            sleep(retry_delay(retry, failures, exc.retry_after))
            continue
        failures = 0
        if events:
            seen.update(e.id for e in events)
            if on_events is not None:
                on_events(events)
        if listener is not None:
            listener(current, events)
        if is_terminal(current.status):
            break
        if poll.timeout is not None and clock() - started > poll.timeout:
            raise ProviderError(
                f"job {job.id} is still {current.status} after {poll.timeout:.0f} s",
                hint="re-run the same command to resume waiting on this job",
            )
        sleep(poll_interval(poll, polls))
        polls += 1
    if is_success(current.status):
        return current
    raise FineTuneFailedError(
        f"fine-tune job {current.id} ended {current.status}: {failure_reason(current)}",
        hint="fix the cause, then re-run with --attempt N+1 to submit a new job",
    )
