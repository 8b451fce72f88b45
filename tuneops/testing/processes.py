"""Start real servers (MLflow, Prefect) as child processes and wait on their health endpoints.

Used by the at-scale tests and benchmarks: the same servers a team would run, on 127.0.0.1,
backed by PostgreSQL and S3 (moto's server). Waiting is on health endpoints, never on sleeps.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from tuneops.processes import ManagedProcess, free_port, start_process

__all__ = ["ManagedProcess", "free_port", "start_mlflow_server", "start_prefect_server"]


def start_mlflow_server(
    *,
    backend_store_uri: str,
    artifacts_destination: str,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    timeout: float = 180.0,
) -> ManagedProcess:
    """``mlflow server`` with one worker (memory) serving artifacts (proxied to S3 or a folder)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", artifacts_destination,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    return start_process(
        "mlflow server", command, url=url, health=f"{url}/health",
        log_path=log_dir / "mlflow-server.log", env=env, timeout=timeout,
    )  # fmt: skip


def start_prefect_server(
    *,
    database_url: str,
    log_dir: Path,
    home: Path,
    port: int | None = None,
    timeout: float = 180.0,
) -> ManagedProcess:
    """``prefect server start`` on ``database_url`` (``postgresql+asyncpg://`` or sqlite)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_API_URL": url,
    }
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return start_process(
        "prefect server", command, url=url, health=f"{url}/health",
        log_path=log_dir / "prefect-server.log", env=env, timeout=timeout,
    )  # fmt: skip
