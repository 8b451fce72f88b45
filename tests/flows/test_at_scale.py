"""The ``retrain`` flow in the at-scale configuration, every part a real server on 127.0.0.1:

- an MLflow server on PostgreSQL, artifacts proxied to S3 (moto's S3 server, over HTTP);
- a Prefect server on PostgreSQL, which the ``tuneops run`` process reports to;
- datasets on S3, the promotion ledger in PostgreSQL;
- the local tuning service, reached with the official openai SDK.

Cloud S3 is replaced by moto's server because no cloud is reachable here; it speaks S3's HTTP API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from tuneops.registry.ledger import Ledger
from tuneops.testing.processes import start_mlflow_server, start_prefect_server

from .conftest import MODEL_NAME, RetrainProject

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def databases(postgres_url: str) -> Iterator[dict[str, str]]:
    """Three more throwaway databases beside the session's: MLflow, Prefect and tuneops' state."""
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    names = {part: f"tuneops_{part}_{uuid.uuid4().hex[:8]}" for part in ("mlflow", "prefect", "state")}
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    server = postgres_url.rsplit("/", 1)[0].split("://", 1)[1]
    yield {part: f"{server}/{name}" for part, name in names.items()}
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def test_retrain_against_mlflow_and_prefect_servers_on_postgres_with_s3(
    retrain_project: RetrainProject, databases: dict[str, str], s3_server, s3_bucket: str, tmp_path: Path
):
    aws = {
        "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    mlflow_server = start_mlflow_server(
        backend_store_uri=f"postgresql+psycopg2://{databases['mlflow']}",
        artifacts_destination=f"s3://{s3_bucket}/mlflow",
        log_dir=tmp_path / "logs",
        env={**aws, "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint_url},
    )
    prefect_server = start_prefect_server(
        database_url=f"postgresql+asyncpg://{databases['prefect']}",
        log_dir=tmp_path / "logs",
        home=tmp_path / "ph",
    )
    with mlflow_server, prefect_server:
        state_url = f"postgresql+psycopg2://{databases['state']}"
        (retrain_project.directory / ".env").write_text(
            f"TUNEOPS_TRACKING_URI={mlflow_server.url}\n"
            f"TUNEOPS_DATA_STORE_URI=s3://{s3_bucket}/datasets\n"
            f"TUNEOPS_S3_ENDPOINT_URL={s3_server.endpoint_url}\n"
            f"TUNEOPS_STATE_DB_URL={state_url}\n"
        )
        env = {**os.environ, **aws, "PREFECT_API_URL": prefect_server.url}
        env.pop("MLFLOW_TRACKING_URI", None)
        run = subprocess.run(
            [sys.executable, "-m", "tuneops.cli.main", "run", "--no-progress"],
            cwd=retrain_project.directory, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

        # MLflow server (PostgreSQL): one version carrying the lineage tags, challenger set
        client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
        [version] = client.search_model_versions(f"name = '{MODEL_NAME}'")
        assert version.tags["tuneops.provider"] == "local"
        assert version.tags["tuneops.job_id"].startswith("ftjob-")
        assert client.get_model_version_by_alias(MODEL_NAME, "challenger").version == version.version

        # S3: the dataset version and MLflow's artifacts both live in the bucket
        s3 = boto3.client("s3", endpoint_url=s3_server.endpoint_url)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
        assert any(k.startswith("datasets/datasets/claims/") and k.endswith("manifest.json") for k in keys), (
            keys
        )
        assert any(k.startswith("mlflow/") and k.endswith("MLmodel") for k in keys), keys
        assert not (retrain_project.directory / ".tuneops" / "mlartifacts").exists()

        # PostgreSQL ledger: the flow's move of the challenger alias
        ledger = Ledger.open(state_url)
        try:
            moves = [(e.alias, e.to_version, e.source) for e in ledger.history(MODEL_NAME)]
        finally:
            ledger.close()
        assert moves == [("challenger", version.version, "flow")]

        # Prefect server (PostgreSQL): the retrain flow run is recorded as completed
        answer = httpx.post(f"{prefect_server.url}/flow_runs/filter", json={"limit": 10}, timeout=10)
        runs = [r for r in answer.json() if r["state_type"] == "COMPLETED"]
        assert runs and version.tags["tuneops.flow_run_id"] in {r["id"] for r in runs}
