"""Schedules and event triggers on a REAL ``prefect server`` (PostgreSQL) with a REAL ``prefect worker``.

``tuneops deploy`` registers the project's deployments; then:

- a drift event for the model, sent through Prefect's events API from another process, makes the
  server create a ``retrain`` run whose ``reason`` is ``drift: <summary>``; the same event for another
  model creates none;
- a schedule set to every minute makes the server's scheduler create a ``retrain`` run, a process
  worker runs it to completion, and MLflow records the reason ``schedule``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tuneops.processes import spawn_process
from tuneops.testing.processes import start_prefect_server

from .conftest import MODEL_NAME, RetrainProject

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def prefect_server(postgres_url: str, tmp_path: Path) -> Iterator[Any]:
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


def _env(server: Any) -> dict[str, str]:
    env = {**os.environ, "PREFECT_API_URL": server.url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _deploy(project: RetrainProject, server: Any, schedule: str) -> str:
    with project.spec_path.open("a", encoding="utf-8") as spec:
        spec.write(f"schedule: {schedule}\n")
    done = subprocess.run(
        [sys.executable, "-m", "tuneops.cli.main", "deploy"],
        cwd=project.directory, env=_env(server), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _retrain_runs(server: Any, state: str | None = None) -> list[dict[str, Any]]:
    """The deployment runs of ``retrain`` (in ``state``; an every-minute cron schedules ~100 ahead)."""
    runs_filter = {"state": {"type": {"any_": [state]}}} if state else {}
    answer = httpx.post(
        f"{server.url}/flow_runs/filter",
        json={"flow_runs": runs_filter, "flows": {"name": {"any_": ["retrain"]}}, "limit": 200},
        timeout=10,
    )
    answer.raise_for_status()
    return [r for r in answer.json() if r.get("deployment_id")]


def _wait_for(condition: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(every)
    return condition()


def _emit(server: Any, model: str, summary: str) -> None:
    code = (
        "from tuneops import events\n"
        f"events.emit(events.DRIFT_DETECTED, {model!r}, {summary!r})\n"
        "from prefect.events.worker import EventsWorker\n"
        "EventsWorker.drain_all()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(server), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_drift_event_for_the_model_starts_retrain_with_its_summary_and_another_model_does_not(
    retrain_project: RetrainProject, prefect_server: Any
) -> None:
    printed = _deploy(retrain_project, prefect_server, "{retrain_cron: null, monitor: false}")
    assert "tuneops.drift.detected on tuneops.model." + MODEL_NAME in printed
    assert "prefect worker start --pool tuneops-process" in printed

    _emit(prefect_server, "another-model", "embedding AUC 0.9")
    _emit(prefect_server, MODEL_NAME, "prompt-length PSI 0.62 > 0.25")
    runs = _wait_for(lambda: _retrain_runs(prefect_server), timeout=60)
    assert len(runs) == 1, runs
    assert runs[0]["parameters"]["reason"] == "drift: prompt-length PSI 0.62 > 0.25"
    # the other model's event was sent first; give it the same chance and it still made nothing
    time.sleep(5)
    assert len(_retrain_runs(prefect_server)) == 1


def test_schedule_every_minute_makes_a_retrain_run_that_a_worker_completes_with_reason_schedule(
    retrain_project: RetrainProject, prefect_server: Any, tmp_path: Path
) -> None:
    from tuneops.registry.mlflow_store import RegistryStore
    from tuneops.settings import TuneopsSettings

    _deploy(
        retrain_project,
        prefect_server,
        "{retrain_cron: '* * * * *', retrain_on_drift: false, monitor: false}",
    )
    worker = spawn_process(
        "prefect worker",
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "tuneops-process", "--limit", "1"],
        url=prefect_server.url,
        log_path=tmp_path / "logs" / "worker.log",
        base_env=_env(prefect_server),
    )
    with worker:

        def completed() -> list[dict[str, Any]]:
            return _retrain_runs(prefect_server, "COMPLETED")

        runs = _wait_for(completed, timeout=900, every=5)
        assert runs, (tmp_path / "logs" / "worker.log").read_text()[-4000:]
    assert all(r["parameters"]["reason"] == "schedule" and r["auto_scheduled"] for r in runs)

    settings = TuneopsSettings.load(retrain_project.directory)
    store = RegistryStore.from_settings(settings)
    [version] = store.versions(MODEL_NAME)
    evaluation = store.get_run(version.tags["tuneops.eval_run_id"])
    assert evaluation.tags["tuneops.reason"] == "schedule"
    assert version.tags["tuneops.flow_run_id"] in {r["id"] for r in runs}
