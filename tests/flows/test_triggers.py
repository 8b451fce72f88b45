"""Schedules and event triggers on a REAL ``prefect server`` (PostgreSQL) with a REAL ``prefect worker``.

``tuneops deploy`` registers the project's deployments; then:

- a drift event for the model, sent through Prefect's events API from another process, makes the
  server create a ``retrain`` run whose ``reason`` is ``drift: <summary>``; the same event for another
  model creates none;
- a schedule set to every minute makes the server's scheduler create a ``retrain`` run, a process
  worker runs it to completion, and MLflow records the reason ``schedule``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    MODEL_NAME,
    RetrainProject,
    deploy,
    deployment_runs,
    prefect_env,
    start_worker,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _emit(server: Any, model: str, summary: str) -> None:
    code = (
        "from tuneops import events\n"
        f"events.emit(events.DRIFT_DETECTED, {model!r}, {summary!r})\n"
        "from prefect.events.worker import EventsWorker\n"
        "EventsWorker.drain_all()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=prefect_env(server), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_drift_event_for_the_model_starts_retrain_with_its_summary_and_another_model_does_not(
    retrain_project: RetrainProject, prefect_server: Any
) -> None:
    printed = deploy(retrain_project, prefect_server, "{retrain_cron: null, monitor: false}")
    assert "tuneops.drift.detected on tuneops.model." + MODEL_NAME in printed
    assert "prefect worker start --pool tuneops-process" in printed

    _emit(prefect_server, "another-model", "embedding AUC 0.9")
    _emit(prefect_server, MODEL_NAME, "prompt-length PSI 0.62 > 0.25")
    runs = wait_for(lambda: deployment_runs(prefect_server), timeout=60)
    assert len(runs) == 1, runs
    assert runs[0]["parameters"]["reason"] == "drift: prompt-length PSI 0.62 > 0.25"
    # the other model's event was sent first; give it the same chance and it still made nothing
    time.sleep(5)
    assert len(deployment_runs(prefect_server)) == 1


def test_schedule_every_minute_makes_a_retrain_run_that_a_worker_completes_with_reason_schedule(
    retrain_project: RetrainProject, prefect_server: Any, tmp_path: Path
) -> None:
    from tuneops.registry.mlflow_store import RegistryStore
    from tuneops.settings import TuneopsSettings

    deploy(
        retrain_project,
        prefect_server,
        "{retrain_cron: '* * * * *', retrain_on_drift: false, monitor: false}",
    )
    worker = start_worker(prefect_server, tmp_path / "logs" / "worker.log")
    with worker:

        def completed() -> list[dict[str, Any]]:
            return deployment_runs(prefect_server, state="COMPLETED")

        runs = wait_for(completed, timeout=900, every=5)
        assert runs, (tmp_path / "logs" / "worker.log").read_text()[-4000:]
    assert all(r["parameters"]["reason"] == "schedule" and r["auto_scheduled"] for r in runs)

    settings = TuneopsSettings.load(retrain_project.directory)
    store = RegistryStore.from_settings(settings)
    [version] = store.versions(MODEL_NAME)
    evaluation = store.get_run(version.tags["tuneops.eval_run_id"])
    assert evaluation.tags["tuneops.reason"] == "schedule"
    assert version.tags["tuneops.flow_run_id"] in {r["id"] for r in runs}
