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
)
from tuneops.tasks.finetune.types import FineTuneJob, TrainingEvent

from tuneops.errors import FineTuneFailedError, ProviderError, TransientProviderError

log = logging.getLogger(__name__)

ProgressListener = Callable[[FineTuneJob, list[TrainingEvent]], None]
progress_listener: ContextVar[ProgressListener | None] = ContextVar("finetune_progress", default=None)
"""Set by the CLI to draw live progress; the flow and tasks run in its context."""


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
    last_event_id: str | None = None
    listener = on_update or progress_listener.get()
    current = job
    while True:
        try:
            current = provider.get_job(job.id)
            events = provider.list_events(job.id, since_id=last_event_id)
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
            last_event_id = events[-1].id
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
