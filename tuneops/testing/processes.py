"""Start real servers (MLflow, Prefect) as child processes and wait on their health endpoints.

Used by the at-scale tests and benchmarks: the same servers a team would run, on 127.0.0.1,
backed by PostgreSQL and S3 (moto's server). Waiting is on health endpoints, never on sleeps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tuneops.errors import ServiceError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ManagedProcess:
    """A child server process with its base URL and log file."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after ``timeout``."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def wait_until_healthy(managed: ManagedProcess, health_url: str, timeout: float) -> None:
    """Poll ``health_url`` until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if managed.process.poll() is not None:
            raise ServiceError(
                f"{managed.name} exited with code {managed.process.returncode} while starting:\n"
                f"{managed.log_tail()}"
            )
        try:
            with urllib.request.urlopen(health_url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    managed.stop()
    raise ServiceError(f"{managed.name} did not become healthy within {timeout:.0f} s:\n{managed.log_tail()}")


def start_process(
    name: str,
    command: Sequence[str],
    *,
    url: str,
    health_url: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> ManagedProcess:
    """Start ``command`` in its own process group, logging to ``log_path``, and wait until healthy."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    managed = ManagedProcess(name=name, url=url, process=process, log_path=log_path)
    wait_until_healthy(managed, health_url, timeout)
    return managed


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
        "mlflow server", command, url=url, health_url=f"{url}/health",
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
        "prefect server", command, url=url, health_url=f"{url}/health",
        log_path=log_dir / "prefect-server.log", env=env, timeout=timeout,
    )  # fmt: skip
