"""A small but real project for the ``retrain`` flow: learnable claims data and a local service.

The service is the real local tuning service on the tiny test base model; the data is the
shipped claims stand-in (strict answer format, fully determined by the claim), small enough to
fine-tune in seconds and learnable enough for the fine-tune to beat the base model honestly.

For the tests on a real Prefect deployment (triggers, the drift loop): ``prefect_server`` (a
``prefect server`` on a throwaway PostgreSQL database), ``start_worker`` (a process worker on the
pool ``tuneops deploy`` creates), ``deploy`` and ``deployment_runs`` (the server's view).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tuneops.processes import ManagedProcess, spawn_process
from tuneops.serving.local.testing import as_jsonl, claims_chat_examples, serve_locally
from tuneops.serving.local.tinymodel import TINY_MODEL_ID, ensure_tiny_model
from tuneops.testing.processes import start_prefect_server

MODEL_NAME = "claims-bot"


@dataclass(frozen=True)
class RetrainProject:
    """A project folder with ``tuneops.yaml`` pointing at a running local service."""

    directory: Path
    spec_path: Path
    base_url: str


def write_project(directory: Path, base_url: str, *, n_epochs: int = 3) -> RetrainProject:
    """Write data splits and a spec whose gate a real fine-tune of the tiny model can pass."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = claims_chat_examples(150, seed=11)
    (directory / "train.jsonl").write_bytes(as_jsonl(rows[:100]))
    (directory / "validation.jsonl").write_bytes(as_jsonl(rows[100:120]))
    (directory / "test.jsonl").write_bytes(as_jsonl(rows[120:]))
    spec_path = directory / "tuneops.yaml"
    spec_path.write_text(
        f"""
model: {{name: {MODEL_NAME}, base_model: tuneops-tiny}}
provider: {{kind: local, base_url: "{base_url}"}}
data: {{name: claims, train: train.jsonl, validation: validation.jsonl, test: test.jsonl}}
finetune:
  suffix: bot
  seed: 7
  hyperparameters: {{n_epochs: {n_epochs}}}
evaluation:
  metrics: [f1, rouge, format]
  format: {{regex: "^CLAIM_TYPE=\\\\w+; PRIORITY=\\\\w+; NEXT=\\\\w+\\\\.$"}}
  gates:
    - {{metric: f1, min_absolute_change: 0.05}}
  max_tokens: 40
  bootstrap_resamples: 200
"""
    )
    return RetrainProject(directory=directory, spec_path=spec_path, base_url=base_url)


@pytest.fixture(scope="session")
def default_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default-profile ``tuneops-tiny`` (the one users get), built once per session (~1 min).

    The flow tests need a base model that writes language and learns the answer format, so
    that "the fine-tune beats the base" is a real result; the test profile is too weak for that.
    """
    return ensure_tiny_model(tmp_path_factory.mktemp("tiny-default") / TINY_MODEL_ID, "default")


@pytest.fixture
def retrain_project(tmp_path: Path, default_tiny_model: Path) -> Iterator[RetrainProject]:
    with serve_locally(tmp_path / "models", default_tiny_model) as service:
        yield write_project(tmp_path / "project", service.base_url)


@pytest.fixture
def prefect_server(postgres_url: str, tmp_path: Path) -> Iterator[ManagedProcess]:
    """``prefect server start`` on a throwaway PostgreSQL database."""
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    name = f"tuneops_prefect_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    server_part = postgres_url.rsplit("/", 1)[0].split("://", 1)[1]
    server = start_prefect_server(
        database_url=f"postgresql+asyncpg://{server_part}/{name}",
        log_dir=tmp_path / "logs",
        home=tmp_path / "ph",
    )
    with server:
        yield server
    with admin.connect() as conn:
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
        )
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def prefect_env(server: ManagedProcess) -> dict[str, str]:
    """The environment of a process that talks to ``server`` (the project's own settings otherwise)."""
    env = {**os.environ, "PREFECT_API_URL": server.url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def deploy(project: RetrainProject, server: ManagedProcess, schedule: str) -> str:
    """``tuneops deploy`` in the project with ``schedule:`` appended to its spec; returns its output."""
    with project.spec_path.open("a", encoding="utf-8") as spec:
        spec.write(f"schedule: {schedule}\n")
    done = subprocess.run(
        [sys.executable, "-m", "tuneops.cli.main", "deploy"],
        cwd=project.directory, env=prefect_env(server), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def start_worker(server: ManagedProcess, log_path: Path) -> ManagedProcess:
    """A ``prefect worker`` on the pool ``tuneops deploy`` made, one run at a time."""
    return spawn_process(
        "prefect worker",
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "tuneops-process", "--limit", "1"],
        url=server.url,
        log_path=log_path,
        base_env=prefect_env(server),
    )


def deployment_runs(
    server: ManagedProcess, flow: str = "retrain", state: str | None = None
) -> list[dict[str, Any]]:
    """The deployment runs of ``flow`` (in ``state``) on the server; runs made outside one are left out."""
    runs_filter = {"state": {"type": {"any_": [state]}}} if state else {}
    answer = httpx.post(
        f"{server.url}/flow_runs/filter",
        json={"flow_runs": runs_filter, "flows": {"name": {"any_": [flow]}}, "limit": 200},
        timeout=10,
    )
    answer.raise_for_status()
    return [r for r in answer.json() if r.get("deployment_id")]


def wait_for(condition: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    """Poll ``condition`` until it is truthy or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(every)
    return condition()
