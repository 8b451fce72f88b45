"""Where a provider is reached and with which key: one answer for every caller.

Fine-tune submission, evaluation, registration (which stores only the key's *variable name*),
the local service launcher and the gateway all need the same three facts about the spec's
provider: the OpenAI-protocol base URL for inference, the API key from settings, and which SDK
client speaks to it. They get them from :func:`resolve_endpoint`, never by testing
``provider.kind`` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from tuneops.errors import ProviderAuthError

if TYPE_CHECKING:
    from tuneops.settings import TuneopsSettings
    from tuneops.spec import ProviderConfig

LOCAL_PLACEHOLDER_KEY = "tuneops-local"
"""The local service needs no key, but the SDK refuses to start without one."""

API_KEY_ENV: dict[str, str] = {
    "local": "TUNEOPS_LOCAL_API_KEY",
    "openai": "OPENAI_API_KEY",
    "azure-openai": "AZURE_OPENAI_API_KEY",
}
"""The environment variable that holds each provider kind's key (what a registered model records)."""

ClientKind = Literal["openai", "azure"]


@dataclass(frozen=True)
class ProviderEndpoint:
    """How to reach one provider: never logged whole (``api_key`` is a secret).

    Attributes:
        kind: the spec's ``provider.kind``.
        base_url: the OpenAI-protocol root for inference (chat completions, models). Azure OpenAI's
            v1 surface speaks the plain protocol there; ``model=`` is the deployment name.
        api_key: the key from settings, or None when none is set.
        api_key_env: the variable the key is read from, safe to record.
        client_kind: which SDK client manages files and jobs (``AzureOpenAI`` needs ``api_version``).
        organization: OpenAI's organization header, where one applies.
    """

    kind: str
    base_url: str
    api_key: str | None = field(repr=False)
    api_key_env: str
    client_kind: ClientKind = "openai"
    organization: str | None = None

    @property
    def is_local(self) -> bool:
        """The embedded default: tuneops' own service, which accepts LoRA settings and can be started."""
        return self.kind == "local"  # the one other place that knows: is_local_provider

    def require_key(self) -> str:
        """The API key the SDK client needs; the local service takes a placeholder when none is set.

        Raises:
            ProviderAuthError: a cloud provider has no key in settings.
        """
        if self.api_key:
            return self.api_key
        if self.is_local:
            return LOCAL_PLACEHOLDER_KEY
        raise ProviderAuthError(
            f"provider.kind is {self.kind} but no key is set",
            hint=f"set {self.api_key_env} in the environment or the project's .env",
        )


def resolve_endpoint(config: ProviderConfig, settings: TuneopsSettings) -> ProviderEndpoint:
    """The endpoint of the spec's ``provider`` section, with its key from ``settings``."""
    if config.kind == "azure-openai":
        key = settings.azure_openai_api_key
        return ProviderEndpoint(
            kind=config.kind,
            base_url=f"{config.endpoint.rstrip('/')}/openai/v1",
            api_key=key.get_secret_value() if key else None,
            api_key_env=API_KEY_ENV[config.kind],
            client_kind="azure",
        )
    if config.kind == "openai":
        key = settings.openai_api_key
        return ProviderEndpoint(
            kind=config.kind,
            base_url=config.base_url,
            api_key=key.get_secret_value() if key else None,
            api_key_env=API_KEY_ENV[config.kind],
            organization=config.organization,
        )
    return ProviderEndpoint(
        kind=config.kind,
        base_url=config.base_url,
        api_key=local_service_key(settings),
        api_key_env=API_KEY_ENV[config.kind],
    )


def is_local_provider(config: ProviderConfig) -> bool:
    """True for tuneops' own service: it takes LoRA settings, can be started here, and answers fast."""
    return config.kind == "local"


def local_service_key(settings: TuneopsSettings) -> str | None:
    """The bearer key tuneops' own service requires, if the settings set one."""
    key = settings.local_api_key
    return key.get_secret_value() if key else None
