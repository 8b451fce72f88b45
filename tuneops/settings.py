"""The one settings object: where state lives and which credentials to use.

Settings come from the environment and the project's ``.env``; never from the spec, which is
committed to git and must never hold a store address that differs per machine or a secret.
They are read once at the edge (CLI or flow entry) and passed down; nothing here runs at
import time.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

STATE_DIR_NAME = ".tuneops"

# Telemetry that would phone home (and slow everything down offline). Applied at the edge.
QUIET_ENVIRONMENT = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


DEFAULT_GATEWAY_PORT = 8780
DEFAULT_GATEWAY_URL = f"http://127.0.0.1:{DEFAULT_GATEWAY_PORT}/v1"


class TuneopsSettings(BaseSettings):
    """Store addresses and credentials for one project directory.

    Every ``*_uri`` left unset falls back to the embedded default under ``<project>/.tuneops``:
    a local data store, SQLite MLflow, and a SQLite state database.
    """

    model_config = SettingsConfigDict(
        env_prefix="TUNEOPS_", extra="ignore", frozen=True, populate_by_name=True
    )

    project_dir: Path = Field(default_factory=Path.cwd)
    home: Path | None = None
    data_store_uri: str | None = None
    tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("TUNEOPS_TRACKING_URI", "MLFLOW_TRACKING_URI")
    )
    artifact_root: str | None = None
    state_db_url: str | None = None
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TUNEOPS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    )
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TUNEOPS_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    azure_openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TUNEOPS_AZURE_OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"),
    )
    local_api_key: SecretStr | None = None
    webhook_secret: SecretStr | None = None  # signs MLflow registry webhooks (TUNEOPS_WEBHOOK_SECRET)
    mlflow_ui_url: str | None = None
    prefect_ui_url: str | None = None
    gateway_url: str = DEFAULT_GATEWAY_URL
    """Where clients of the gateway (rollout smoke tests, ``tuneops traffic``) find its ``/v1`` root."""
    gateway_api_keys: SecretStr | None = None
    """Bearer keys the gateway accepts, comma-separated (TUNEOPS_GATEWAY_API_KEYS); clients send the first."""

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> TuneopsSettings:
        home = (self.home or self.project_dir / STATE_DIR_NAME).resolve()
        defaults: dict[str, Any] = {
            "home": home,
            "data_store_uri": self.data_store_uri or (home / "data").as_uri(),
            "tracking_uri": self.tracking_uri or f"sqlite:///{home / 'mlflow.db'}",
            # An MLflow server decides where artifacts go (e.g. proxied to S3); only the embedded
            # SQLite store needs a root, or artifacts land in ./mlruns of whatever folder we are in.
            "artifact_root": self.artifact_root
            or (None if self._tracking_is_server() else (home / "mlartifacts").as_uri()),
            "state_db_url": self.state_db_url or f"sqlite:///{home / 'state.db'}",
        }
        for name, value in defaults.items():
            object.__setattr__(self, name, value)
        return self

    def _tracking_is_server(self) -> bool:
        return (self.tracking_uri or "").startswith(("http://", "https://", "databricks"))

    @property
    def state_home(self) -> Path:
        """``home`` with its default filled in (always set after validation)."""
        assert self.home is not None
        return self.home

    @property
    def models_dir(self) -> Path:
        """Where the local tuning service keeps base models, adapters and its own database."""
        return self.state_home / "models"

    def secret_values(self) -> list[str]:
        """Every secret in these settings, for log scrubbing and leak scans."""
        secrets = (self.openai_api_key, self.azure_openai_api_key, self.local_api_key, self.webhook_secret)
        values = [s.get_secret_value() for s in secrets if s is not None and s.get_secret_value()]
        return [*values, *self.gateway_keys]

    @property
    def gateway_keys(self) -> tuple[str, ...]:
        """``gateway_api_keys`` split on commas, blanks and repeats dropped."""
        raw = self.gateway_api_keys.get_secret_value() if self.gateway_api_keys else ""
        return tuple(dict.fromkeys(k.strip() for k in raw.split(",") if k.strip()))

    @classmethod
    def load(cls, project_dir: Path | None = None, **overrides: Any) -> TuneopsSettings:
        """Read settings for ``project_dir`` from the environment and ``<project_dir>/.env``."""
        project = (project_dir or Path.cwd()).resolve()
        env_file = project / ".env"
        return cls(
            project_dir=project,
            _env_file=env_file if env_file.is_file() else None,  # type: ignore[call-arg]
            **overrides,
        )


def quiet_third_parties() -> None:
    """Switch off telemetry and hub downloads for this process and its children.

    Called once by the CLI and by test fixtures; an explicit environment value wins.
    """
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    # MLflow's schema set-up on a new store is not news to a user.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
