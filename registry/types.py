"""Our own types for the registry area: what goes in, what comes out, what the ledger holds.

Plain frozen dataclasses, no SDK imports, so flows and the CLI can hold them without MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

LedgerSource = Literal["cli", "flow", "reconcile", "webhook", "gateway"]


@dataclass(frozen=True)
class DatasetLink:
    """One split of the dataset version a fine-tune was trained or evaluated on.

    ``digest`` is the split file's sha256 and ``uri`` its store URI; ``version_digest`` and
    ``version_uri`` name the whole dataset version (where ``manifest.json`` lives).
    """

    split: str
    digest: str
    uri: str
    dataset_name: str = ""
    version_digest: str = ""
    version_uri: str = ""
    rows: int | None = None
    tokens: int | None = None


@dataclass(frozen=True)
class RegistrationRequest:
    """Everything ``register_model`` needs to turn one fine-tune into a registered version.

    The flow maps the data, fine-tune and evaluation stage results into this. ``api_key_env`` is
    the *name* of the environment variable holding the endpoint's key; the key itself is never
    stored anywhere by the registry. ``api_version`` is set for Azure OpenAI (then
    ``endpoint_base_url`` is the Azure endpoint and ``endpoint_model`` the deployment name).
    """

    model_name: str
    provider: str
    base_model: str
    endpoint_base_url: str
    endpoint_model: str
    job_id: str
    api_key_env: str | None = None
    api_version: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    trained_tokens: int | None = None
    estimated_cost: float | None = None
    datasets: tuple[DatasetLink, ...] = ()
    eval_run_id: str | None = None
    gate_passed: bool | None = None
    gate_reasons: tuple[str, ...] = ()
    flow_run_id: str | None = None
    finetune_run_id: str | None = None
    description: str = ""
    experiment_name: str | None = None
    extra_tags: dict[str, str] = field(default_factory=dict)

    def digest(self, split: str) -> str | None:
        """The sha256 of ``split`` (train/validation/test), if that split was used."""
        return next((d.digest for d in self.datasets if d.split == split), None)


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version as tuneops sees it. ``created`` is False when the job was already registered."""

    model_name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]
    aliases: tuple[str, ...] = ()
    created: bool = False
    description: str = ""
    created_at: datetime | None = None

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"

    @property
    def gate(self) -> str | None:
        return self.tags.get("tuneops.gate")


@dataclass(frozen=True)
class AliasMove:
    """One alias changing target; ``None`` on either side means "unset"."""

    alias: str
    from_version: str | None
    to_version: str | None


@dataclass(frozen=True)
class LedgerEntry:
    """One row of the append-only promotion ledger."""

    id: int
    model: str
    alias: str
    from_version: str | None
    to_version: str | None
    actor: str
    reason: str
    source: str
    at: datetime
    intent_id: int | None = None


@dataclass(frozen=True)
class PromotionIntent:
    """A promotion the CLI or a flow is about to make, recorded before MLflow is touched.

    If the process dies between moving the alias and writing the ledger, reconciliation finds
    the intent and records the move with its real actor and reason instead of "unknown".
    """

    id: int
    model: str
    alias: str
    to_version: str | None
    actor: str
    reason: str
    source: str
    at: datetime


@dataclass(frozen=True)
class PromotionResult:
    """What ``promote`` did: the moves it made (empty when nothing changed) and the ledger rows."""

    model_name: str
    alias: str
    version: str
    moves: tuple[AliasMove, ...]
    entries: tuple[LedgerEntry, ...]
    reconciled: tuple[LedgerEntry, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.moves)
