"""The one small interface every fine-tune provider implements, and the factory that picks one.

Flows and tasks talk to a ``FineTuneProvider`` and get our own types back; which SDK client sits
behind it (OpenAI, tuneops' local service, Azure OpenAI) is decided here from ``spec.provider.kind``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tuneops.providers import LOCAL_PLACEHOLDER_KEY, resolve_endpoint
from tuneops.tasks.finetune.types import (
    Checkpoint,
    FineTuneJob,
    FineTuneRequest,
    InferenceTarget,
    TrainingEvent,
    UploadedFile,
)

if TYPE_CHECKING:
    from tuneops.settings import TuneopsSettings
    from tuneops.spec import ProviderConfig


__all__ = ["LOCAL_PLACEHOLDER_KEY", "FineTuneProvider", "provider_for"]


@runtime_checkable
class FineTuneProvider(Protocol):
    """Files + fine-tuning jobs on one provider, in our own types.

    Every method raises only ``tuneops.errors.ProviderError`` subclasses. ``create_job`` never
    retries by itself: a lost answer may mean a created job, so callers look before retrying.
    """

    kind: str
    sends_metadata: bool
    """True when the protocol declares job ``metadata``: the idempotency key travels there
    (else as a tag in ``suffix``). Whether it is echoed is checked on the created job."""

    def upload_file(self, path: Path, *, split: str, sha256: str) -> UploadedFile:
        """Upload ``path`` for fine-tuning, or return the earlier upload of the same digest."""
        ...

    def create_job(self, request: FineTuneRequest) -> FineTuneJob:
        """Create one job (exactly one HTTP attempt)."""
        ...

    def find_jobs(self, key: str) -> list[FineTuneJob]:
        """Every job created for idempotency key ``key`` (metadata or suffix tag), all pages."""
        ...

    def get_job(self, job_id: str) -> FineTuneJob:
        """The job's current state."""
        ...

    def list_events(self, job_id: str) -> list[TrainingEvent]:
        """Every event of the job (all pages), oldest first whatever order the server lists."""
        ...

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        """The job's checkpoints in step order, with their validation loss ([] when none)."""
        ...

    def cancel_job(self, job_id: str) -> FineTuneJob:
        """Ask the provider to cancel the job."""
        ...

    def deploy(self, job: FineTuneJob, name: str, *, model_name: str | None = None) -> FineTuneJob:
        """Make a succeeded job callable; returns it with ``deployment`` set where one is needed.

        Deployments are tagged with ``model_name`` as tuneops' own (``rules.deployment_tags``)."""
        ...

    def inference_target(self, job: FineTuneJob) -> InferenceTarget:
        """Where evaluation and the gateway call the fine-tuned model."""
        ...

    def close(self) -> None:
        """Release the HTTP client."""
        ...


def provider_for(
    config: ProviderConfig,
    settings: TuneopsSettings,
    *,
    timeout: float = 60.0,
    credential: Any | None = None,
) -> FineTuneProvider:
    """The adapter for ``config.kind``, with credentials from ``settings``.

    Args:
        config: the spec's ``provider`` section.
        settings: where the API keys come from (never the spec).
        timeout: per-request timeout in seconds.
        credential: Azure only; anything with ``get_token(scope)`` (default: azure-identity's
            ``DefaultAzureCredential``). Tests pass a static token here.
    """
    endpoint = resolve_endpoint(config, settings)
    if endpoint.client_kind == "azure":
        from tuneops.tasks.finetune.azure_openai import AzureOpenAIProvider

        return AzureOpenAIProvider(
            config,  # type: ignore[arg-type]  # client_kind "azure" is the Azure section
            api_key=endpoint.require_key(),
            timeout=timeout,
            credential=credential,
        )

    from tuneops.tasks.finetune.openai_compatible import OpenAICompatibleProvider

    return OpenAICompatibleProvider(
        kind=endpoint.kind,
        base_url=endpoint.base_url,
        api_key=endpoint.require_key(),
        organization=endpoint.organization,
        timeout=timeout,
    )
