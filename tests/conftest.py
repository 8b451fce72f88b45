"""The test harness every stage reuses: real local parts, no mocks.

- ``prefect_harness``: one Prefect test server for the session (it takes ~15 s to start).
- ``mlflow_store``: a fresh SQLite MLflow store per test, copied from a migrated template so
  each test does not pay for MLflow's schema migrations.
- ``s3_server`` / ``s3_bucket``: moto's S3 *server*, reached by boto3 over real HTTP.
- ``postgres_url``: a throwaway database on the PostgreSQL at 127.0.0.1:5432 (trust auth).
- ``settings``: TuneopsSettings for a temporary project directory.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tuneops.processes import free_port
from tuneops.settings import QUIET_ENVIRONMENT, TuneopsSettings

POSTGRES_ADMIN_URL = os.environ.get(
    "TUNEOPS_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def pytest_configure(config: pytest.Config) -> None:
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    # Local services the tests start run one torch thread: tiny models are fastest so on a shared box.
    os.environ.setdefault("TUNEOPS_TORCH_THREADS", "1")
    # No test may reach a real cloud by accident.
    for key in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "MLFLOW_TRACKING_URI", "AWS_PROFILE"):
        os.environ.pop(key, None)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test server for the whole session, with flow heartbeats off (they cost ~1 s a flow)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        prefect_test_harness(server_startup_timeout=180),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield


@dataclass(frozen=True)
class MlflowStore:
    """A fresh MLflow tracking store: SQLite backend plus a local artifact root."""

    tracking_uri: str
    artifact_root: str
    db_path: Path


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with every migration applied, built once per session."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_store(tmp_path: Path, _mlflow_template: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowStore:
    """A fresh MLflow store for one test; also set as the process-wide tracking URI for it."""
    import mlflow

    db_path = tmp_path / "mlflow.db"
    shutil.copyfile(_mlflow_template, db_path)
    store = MlflowStore(
        tracking_uri=f"sqlite:///{db_path}",
        artifact_root=(tmp_path / "mlartifacts").as_uri(),
        db_path=db_path,
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    mlflow.set_tracking_uri(store.tracking_uri)
    mlflow.set_registry_uri(store.tracking_uri)
    yield store
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


@dataclass(frozen=True)
class S3Server:
    """moto's S3 server listening on 127.0.0.1, spoken to over real HTTP."""

    endpoint_url: str


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(endpoint_url=f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on the moto server for one test; returns its name."""
    import boto3

    name = f"tuneops-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server.endpoint_url).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test session (dropped at the end).

    Skipped locally when no PostgreSQL answers; in CI (CI=true) a missing server is a failure,
    because the at-scale configuration must be tested for real there.
    """
    import sqlalchemy as sa

    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"tuneops_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc.orig}")
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """An empty project directory (what ``tuneops init`` would be pointed at)."""
    path = tmp_path / "project"
    path.mkdir()
    return path


@pytest.fixture
def settings(project_dir: Path, mlflow_store: MlflowStore) -> TuneopsSettings:
    """Settings for a temporary project, using the test's fresh MLflow store."""
    return TuneopsSettings(
        project_dir=project_dir,
        tracking_uri=mlflow_store.tracking_uri,
        artifact_root=mlflow_store.artifact_root,
    )


@pytest.fixture(scope="session")
def schemas() -> dict[str, Any]:
    """OpenAI's published OpenAPI components, rewritten for JSON Schema (the contract tests' reference)."""
    from tuneops.testing.reference.openapi import openai_components

    return openai_components()


def run_cli(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    """Run the real entry point in-process (error mapping included); return (exit code, stdout, stderr)."""
    from tuneops.cli.main import main

    monkeypatch.setattr(sys, "argv", ["tuneops", *args])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
