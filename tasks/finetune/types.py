"""Our own types for the fine-tune stage; adapters return these, never SDK objects.

Providers disagree on details (Azure says ``pending`` where OpenAI says ``queued``, leaves fields
null, needs a deployment before inference); these types are the one vocabulary flows and later
stages use whatever provider ran the job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    """A fine-tune job's state, normalised across providers."""

    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class UploadedFile:
    """A file on the provider's side, named so that its content digest can be found again."""

    id: str
    filename: str
    bytes: int | None = None


@dataclass(frozen=True)
class FineTuneRequest:
    """Everything needed to create one job. ``hyperparameters`` holds only what is set ("auto" too)."""

    base_model: str
    training_file: str
    validation_file: str | None
    hyperparameters: dict[str, Any]
    suffix: str | None
    seed: int
    metadata: dict[str, str]
    extra_body: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    """The adapter puts it where its protocol echoes it back: ``metadata`` or a tag in ``suffix``."""


@dataclass(frozen=True)
class FineTuneJob:
    """A job as the provider reports it, in our own terms.

    ``deployment`` is set for providers that must deploy a fine-tune before it can be called
    (Azure); ``endpoint_model`` is then the name inference must use.
    """

    id: str
    status: JobStatus
    provider: str
    model: str
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error_message: str | None = None
    created_at: int | None = None
    finished_at: int | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    training_file: str | None = None
    validation_file: str | None = None
    deployment: str | None = None
    suffix: str | None = None

    @property
    def endpoint_model(self) -> str | None:
        """The model id inference calls: the deployment on Azure, else the fine-tuned model."""
        return self.deployment or self.fine_tuned_model


@dataclass(frozen=True)
class TrainingEvent:
    """One job event; ``step`` and the losses are set for metrics events only."""

    id: str
    created_at: int
    message: str
    level: str = "info"
    step: int | None = None
    total_steps: int | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    extra_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def is_metrics(self) -> bool:
        return self.step is not None


@dataclass(frozen=True)
class Checkpoint:
    """One saved state of a fine-tune that can be called like a model (``ft:...:ckpt-step-N``).

    ``valid_loss`` is the loss on the whole validation split when the provider reports it
    (OpenAI's ``full_valid_loss``), else its last-batch ``valid_loss``; None without a
    validation split. ``epoch`` is None when it cannot be told from the step.
    """

    step: int
    model: str
    epoch: int | None = None
    valid_loss: float | None = None
    train_loss: float | None = None
    created_at: int | None = None


@dataclass(frozen=True)
class InferenceTarget:
    """Where evaluation and the gateway call a model: an OpenAI-compatible endpoint and model id.

    ``api_version`` is set for Azure (its client needs it); the key is never part of this.
    """

    provider: str
    base_url: str
    model: str
    api_version: str | None = None


@dataclass(frozen=True)
class Deployment:
    """A model deployment on the provider (Azure), as its management API reports it.

    ``tags`` are the resource tags; tuneops marks the deployments it creates there
    (``rules.DEPLOYMENT_TAGS``), and touches no other.
    """

    name: str
    model: str | None
    provisioning_state: str | None
    sku: str | None = None
    capacity: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    created_at: int | None = None
