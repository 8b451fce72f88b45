"""Adapter for any OpenAI-compatible fine-tuning endpoint: OpenAI's cloud and tuneops' local service.

Only ``base_url`` and the key differ between the two. The SDK client is built with
``max_retries=0``: the SDK replays POSTs without an idempotency key, and a replayed
``fine_tuning.jobs.create`` whose first answer was lost makes a second job. Retrying is the
caller's job, after looking for the job by its idempotency key. SDK errors become
``tuneops.errors`` here and nowhere else.

Lists (jobs, events, files) are read page by page with ``after`` until the server says there is
no more, and events are put in creation order here: the protocol promises no order, and servers
differ (OpenAI lists events newest first, Microsoft's Azure example oldest first).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai

from tuneops.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRejectedError,
    TransientProviderError,
)
from tuneops.tasks.finetune.rules import (
    IDEMPOTENCY_METADATA_KEY,
    carries_key,
    chronological,
    keyed_suffix,
    normalize_status,
    upload_filename,
)
from tuneops.tasks.finetune.types import (
    Checkpoint,
    FineTuneJob,
    FineTuneRequest,
    InferenceTarget,
    TrainingEvent,
    UploadedFile,
)

_PAGE = 100


def _retry_after(response: Any) -> float | None:
    """Retry-After from a response, in seconds (``retry-after-ms`` first, as the SDK reads it)."""
    headers = getattr(response, "headers", None) or {}
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(header)
        if raw is None:
            continue
        try:
            return float(raw) / divisor
        except ValueError:
            continue
    return None


_KEYLIKE = re.compile(r"\b(sk|key|api[-_]?key)[-_][A-Za-z0-9*_.-]{6,}", re.IGNORECASE)


def _reason(exc: openai.APIStatusError) -> str:
    """The provider's message, with anything key-like masked (OpenAI echoes key fragments on 401)."""
    body = exc.body
    message = exc.message
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            message = str(inner["message"])
    return _KEYLIKE.sub("[redacted]", message)


def translate_error(exc: openai.OpenAIError, action: str, *, applied_maybe: bool) -> ProviderError:
    """Our exception for an SDK error raised while doing ``action``.

    ``applied_maybe`` is true for a POST that changes state: a timeout, a dropped connection or a
    5xx then leaves us not knowing whether it happened, so the error is marked ``ambiguous``.
    """
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        what = "timed out" if isinstance(exc, openai.APITimeoutError) else "lost the connection"
        return TransientProviderError(f"{action}: the provider {what}", ambiguous=applied_maybe)
    if isinstance(exc, openai.APIStatusError):
        status, reason = exc.status_code, _reason(exc)
        message = f"{action}: HTTP {status}: {reason}"
        if status in (401, 403):
            return ProviderAuthError(
                message, status_code=status, hint="check the provider's API key in the environment or .env"
            )
        if status in (408, 409, 429) or status >= 500:
            return TransientProviderError(
                message,
                status_code=status,
                retry_after=_retry_after(exc.response),
                ambiguous=applied_maybe and status != 429,
            )
        return ProviderRejectedError(message, status_code=status)
    return ProviderError(f"{action}: {exc}")


@contextlib.contextmanager
def translating(action: str, *, applied_maybe: bool = False) -> Iterator[None]:
    """Run SDK calls, re-raising their errors as ours (``raise ... from``)."""
    try:
        yield
    except openai.OpenAIError as exc:
        raise translate_error(exc, action, applied_maybe=applied_maybe) from exc


def _plain(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if hasattr(value, "model_dump"):
        return {k: v for k, v in value.model_dump().items() if v is not None}
    return dict(value)


def job_from_sdk(job: Any, provider: str) -> FineTuneJob:
    """Our FineTuneJob from the SDK's object; tolerant of the nulls Azure and others send."""
    error = getattr(job, "error", None)
    message = getattr(error, "message", None) if error is not None else None
    if message is None and isinstance(error, dict):
        message = error.get("message")
    hyper = _plain(getattr(job, "hyperparameters", None))
    method = getattr(job, "method", None)
    supervised = getattr(method, "supervised", None) if method is not None else None
    if not hyper and supervised is not None:
        hyper = _plain(getattr(supervised, "hyperparameters", None))
    return FineTuneJob(
        id=job.id,
        status=normalize_status(getattr(job, "status", None)),
        provider=provider,
        model=getattr(job, "model", None) or "",
        fine_tuned_model=getattr(job, "fine_tuned_model", None),
        trained_tokens=getattr(job, "trained_tokens", None),
        error_message=message or None,
        created_at=getattr(job, "created_at", None),
        finished_at=getattr(job, "finished_at", None),
        hyperparameters=hyper,
        metadata={str(k): str(v) for k, v in (getattr(job, "metadata", None) or {}).items()},
        training_file=getattr(job, "training_file", None),
        validation_file=getattr(job, "validation_file", None),
        suffix=getattr(job, "suffix", None),
    )


def event_from_sdk(event: Any) -> TrainingEvent:
    """Our TrainingEvent; metrics events carry ``step`` and losses in ``data``."""
    data = getattr(event, "data", None) or {}
    if not isinstance(data, dict):
        data = _plain(data)
    numbers = {k: float(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    step = data.get("step")
    known = {"step", "total_steps", "train_loss", "valid_loss"}
    return TrainingEvent(
        id=event.id,
        created_at=int(getattr(event, "created_at", 0) or 0),
        message=getattr(event, "message", "") or "",
        level=getattr(event, "level", None) or "info",
        step=int(step) if isinstance(step, int | float) else None,
        total_steps=int(data["total_steps"]) if isinstance(data.get("total_steps"), int | float) else None,
        train_loss=numbers.get("train_loss"),
        valid_loss=numbers.get("valid_loss"),
        extra_metrics={k: v for k, v in numbers.items() if k not in known},
    )


def checkpoint_from_sdk(raw: Any) -> Checkpoint:
    """Our Checkpoint from a ``fine_tuning.job.checkpoint``: the full-validation-set loss when the
    provider computed one (``full_valid_loss``), else the last batch's ``valid_loss``."""
    metrics = _plain(getattr(raw, "metrics", None))

    def number(name: str) -> float | None:
        value = metrics.get(name)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    full, batch = number("full_valid_loss"), number("valid_loss")
    step = getattr(raw, "step_number", None)
    if step is None:
        step = number("step")
    epoch = number("epoch")  # not in OpenAI's object; a provider that adds it is believed
    return Checkpoint(
        step=int(step or 0),
        model=getattr(raw, "fine_tuned_model_checkpoint", "") or "",
        epoch=int(epoch) if epoch is not None else None,
        valid_loss=full if full is not None else batch,
        train_loss=number("train_loss"),
        created_at=getattr(raw, "created_at", None),
    )


class OpenAICompatibleProvider:
    """Files + fine-tuning jobs through the official ``OpenAI`` client.

    ``sends_metadata``: the protocol declares job ``metadata`` (OpenAI's does), so the
    idempotency key travels there; otherwise it travels as a tag in ``suffix``. Whether the
    server really echoes it is checked on the created job (``submit``), not assumed.
    """

    sends_metadata = True

    def __init__(
        self,
        *,
        kind: str,
        base_url: str,
        api_key: str,
        organization: str | None = None,
        timeout: float = 60.0,
        client: openai.OpenAI | None = None,
    ) -> None:
        self.kind = kind
        self.base_url = base_url
        self._client = client or openai.OpenAI(
            base_url=base_url, api_key=api_key, organization=organization, max_retries=0, timeout=timeout
        )

    @property
    def client(self) -> openai.OpenAI:
        return self._client

    def close(self) -> None:
        self._client.close()

    def _job_create_extra(self) -> dict[str, Any]:
        return {}

    def upload_file(self, path: Path, *, split: str, sha256: str) -> UploadedFile:
        """Reuse the upload named after ``sha256`` when the provider lists one; else upload."""
        filename = upload_filename(split, sha256)
        existing = self._find_upload(filename)
        if existing is not None:
            return existing
        with translating(f"uploading {filename}"), Path(path).open("rb") as handle:
            created = self._client.files.create(file=(filename, handle), purpose="fine-tune")
        return UploadedFile(id=created.id, filename=created.filename or filename, bytes=created.bytes)

    def _find_upload(self, filename: str) -> UploadedFile | None:
        try:
            with translating("listing uploaded files"):
                for item in self._client.files.list(purpose="fine-tune"):
                    if item.filename == filename and getattr(item, "status", None) != "error":
                        return UploadedFile(id=item.id, filename=item.filename, bytes=item.bytes)
        except ProviderRejectedError as exc:
            if exc.status_code in (404, 405):  # a provider without file listing: upload again
                return None
            raise
        return None

    def job_create_fields(self, request: FineTuneRequest) -> dict[str, Any]:
        """The create body: only fields with a value (an explicit ``null`` is a different request)."""
        body: dict[str, Any] = {
            "model": request.base_model,
            "training_file": request.training_file,
            "validation_file": request.validation_file,
            "seed": request.seed,
            "suffix": request.suffix,
        }
        metadata = dict(request.metadata)
        key = request.idempotency_key
        if key is not None and self.sends_metadata:
            metadata[IDEMPOTENCY_METADATA_KEY] = key
        elif key is not None:
            body["suffix"] = keyed_suffix(request.suffix, key)
        if metadata and self.sends_metadata:
            body["metadata"] = metadata
        if request.hyperparameters:
            supervised = {"hyperparameters": request.hyperparameters}
            body["method"] = {"type": "supervised", "supervised": supervised}
        return {k: v for k, v in body.items() if v is not None}

    def create_job(self, request: FineTuneRequest) -> FineTuneJob:
        """One POST, no SDK retries; failures that may have created a job are ``ambiguous``."""
        fields = self.job_create_fields(request)
        extra = {**self._job_create_extra(), **request.extra_body}
        with translating("creating the fine-tune job", applied_maybe=True):
            job = self._client.fine_tuning.jobs.create(**fields, extra_body=extra or None)
        return job_from_sdk(job, self.kind)

    def find_jobs_by_metadata(self, key: str, value: str) -> list[FineTuneJob]:
        """Jobs filtered by the server (``metadata[k]=v``) and checked again here."""
        with translating("looking up fine-tune jobs"):
            jobs = [
                job_from_sdk(j, self.kind)
                for j in self._client.fine_tuning.jobs.list(metadata={key: value}, limit=_PAGE)
            ]
        return [j for j in jobs if j.metadata.get(key) == value]

    def list_jobs(self) -> list[FineTuneJob]:
        """Every job on the account, all pages (``after``), oldest first."""
        with translating("listing fine-tune jobs"):
            jobs = [job_from_sdk(j, self.kind) for j in self._client.fine_tuning.jobs.list(limit=_PAGE)]
        return chronological(jobs, lambda j: j.created_at)

    def find_jobs(self, key: str) -> list[FineTuneJob]:
        """Every job created for idempotency key ``key``, whichever carrier it travelled in.

        With metadata, the server's filter answers first; when it finds nothing (no such job, or
        a server that dropped the metadata of a job made while it was trusted), every job is
        listed and matched by ``carries_key``, so a suffix-keyed job is found too.
        """
        if self.sends_metadata:
            found = self.find_jobs_by_metadata(IDEMPOTENCY_METADATA_KEY, key)
            if found:
                return found
        return [job for job in self.list_jobs() if carries_key(job, key)]

    def get_job(self, job_id: str) -> FineTuneJob:
        with translating(f"reading fine-tune job {job_id}"):
            return job_from_sdk(self._client.fine_tuning.jobs.retrieve(job_id), self.kind)

    def list_events(self, job_id: str) -> list[TrainingEvent]:
        """Every event of the job, all pages, oldest first (whatever order the server uses)."""
        with translating(f"reading events of job {job_id}"):
            events = [
                event_from_sdk(raw) for raw in self._client.fine_tuning.jobs.list_events(job_id, limit=_PAGE)
            ]
        return chronological(events, lambda e: e.created_at)

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        """Every checkpoint of the job (all pages), in step order; [] where the provider has none.

        A provider that does not implement the listing (404/405) has no checkpoints to offer:
        the overfitting check then reports "unknown", it does not fail the run here.
        """
        try:
            with translating(f"reading checkpoints of job {job_id}"):
                raw = list(self._client.fine_tuning.jobs.checkpoints.list(job_id, limit=_PAGE))
        except ProviderRejectedError as exc:
            if exc.status_code in (404, 405):
                return []
            raise
        return sorted((checkpoint_from_sdk(c) for c in raw), key=lambda c: c.step)

    def cancel_job(self, job_id: str) -> FineTuneJob:
        with translating(f"cancelling fine-tune job {job_id}"):
            return job_from_sdk(self._client.fine_tuning.jobs.cancel(job_id), self.kind)

    def deploy(self, job: FineTuneJob, name: str, *, model_name: str | None = None) -> FineTuneJob:
        """Nothing to do: OpenAI and the local service serve a fine-tune under its model id."""
        return job

    def inference_target(self, job: FineTuneJob) -> InferenceTarget:
        if not job.fine_tuned_model:
            raise ProviderRejectedError(f"job {job.id} has no fine-tuned model yet (status {job.status})")
        return InferenceTarget(provider=self.kind, base_url=self.base_url, model=job.fine_tuned_model)
