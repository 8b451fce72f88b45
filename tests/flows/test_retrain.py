"""The ``retrain`` flow end to end, on real parts: the local tuning service over HTTP (official
openai SDK), a SQLite MLflow store, the local data store, and Prefect's test server.

These are the acceptance checks of ``tuneops run``: every lineage link present and equal to the
systems it points at; a re-run on unchanged inputs trains and registers nothing; a run killed at
each stage boundary and re-run ends with exactly one job and one version.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from openai import OpenAI

from tuneops.settings import TuneopsSettings
from tuneops.tasks.data import list_versions, store_for

from .conftest import MODEL_NAME, RetrainProject

pytestmark = pytest.mark.slow


def tuneops_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    """Run the ``tuneops`` command as a user would, in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "tuneops.cli.main", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def service_jobs(project: RetrainProject) -> list:
    return list(OpenAI(base_url=project.base_url, api_key="none").fine_tuning.jobs.list())


def mlflow_client(project: RetrainProject) -> MlflowClient:
    settings = TuneopsSettings.load(project.directory)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def registered_versions(project: RetrainProject) -> list:
    client = mlflow_client(project)
    try:
        return list(client.search_model_versions(f"name = '{MODEL_NAME}'"))
    except Exception:  # the registered model does not exist yet
        return []


def test_retrain_registers_a_challenger_whose_lineage_matches_every_system(retrain_project, prefect_harness):
    from tuneops.flows.retrain import retrain

    outcome = retrain(spec_path=str(retrain_project.spec_path))

    assert outcome.evaluation is not None
    assert outcome.gate_passed, outcome.evaluation.markdown
    assert outcome.registered.created and outcome.challenger_set

    lineage = tuneops_cli("lineage", f"{MODEL_NAME}@challenger", "--json", cwd=retrain_project.directory)
    assert lineage.returncode == 0, lineage.stderr
    tree = json.loads(lineage.stdout)

    # dataset digests equal the data store's
    settings = TuneopsSettings.load(retrain_project.directory)
    [stored] = list_versions(store_for(settings), "claims")
    assert tree["dataset"]["digest"] == stored.digest
    assert {s["split"]: s["sha256"] for s in tree["dataset"]["splits"]} == {
        name: split.sha256 for name, split in stored.splits.items()
    }
    # the job id equals the service's (and there is exactly one job)
    [job] = service_jobs(retrain_project)
    assert tree["finetune"]["job_id"] == job.id
    assert tree["finetune"]["endpoint_model"] == job.fine_tuned_model
    # the eval metrics equal the MLflow run's
    eval_run = mlflow_client(retrain_project).get_run(tree["evaluation"]["run_id"])
    assert tree["evaluation"]["metrics"] == pytest.approx(eval_run.data.metrics)
    assert tree["evaluation"]["gate"] == "passed"
    # the ledger recorded the flow's move of the challenger alias
    assert [(e["alias"], e["to_version"], e["source"]) for e in tree["ledger"]] == [
        ("challenger", outcome.registered.version, "flow")
    ]
    assert tree["flow_run_id"]

    again = retrain(spec_path=str(retrain_project.spec_path))
    assert again.evaluation is None, "an unchanged re-run must not evaluate again"
    assert not again.registered.created and again.registered.version == outcome.registered.version
    assert len(service_jobs(retrain_project)) == 1
    assert len(registered_versions(retrain_project)) == 1


def _kill_when(process: subprocess.Popen, condition: Callable[[], bool], timeout: float = 300) -> bool:
    """SIGKILL ``process`` (its whole group) as soon as ``condition`` holds; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            hit = condition()
        except Exception:
            hit = False
        if hit:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
            return True
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError("the stage boundary was never reached")


def test_killed_at_each_stage_boundary_and_rerun_gives_one_job_and_one_version(
    retrain_project, prefect_harness
):
    from prefect.settings import PREFECT_API_URL

    env = {"PREFECT_API_URL": str(PREFECT_API_URL.value())}
    client = mlflow_client(retrain_project)

    def job_created() -> bool:
        return len(service_jobs(retrain_project)) > 0

    def job_succeeded() -> bool:
        return any(j.status == "succeeded" for j in service_jobs(retrain_project))

    def evaluated() -> bool:
        experiment = client.get_experiment_by_name(MODEL_NAME)
        return experiment is not None and bool(
            client.search_runs([experiment.experiment_id], "tags.`tuneops.stage` = 'evaluation'")
        )

    def registered() -> bool:
        return len(registered_versions(retrain_project)) > 0

    killed_at = []
    for boundary in (job_created, job_succeeded, evaluated, registered):
        process = subprocess.Popen(
            [sys.executable, "-m", "tuneops.cli.main", "run", "--no-progress"],
            cwd=retrain_project.directory,
            env={**os.environ, **env},
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if _kill_when(process, boundary):
            killed_at.append(boundary.__name__)
    assert killed_at, "no run was killed: the test exercised nothing"

    final = tuneops_cli("run", "--no-progress", cwd=retrain_project.directory, env=env)
    assert final.returncode == 0, final.stdout + final.stderr
    assert len(service_jobs(retrain_project)) == 1
    versions = registered_versions(retrain_project)
    assert len(versions) == 1
    assert client.get_model_version_by_alias(MODEL_NAME, "challenger").version == versions[0].version
    experiment = client.get_experiment_by_name(MODEL_NAME)
    finetune_runs = client.search_runs([experiment.experiment_id], "tags.`tuneops.kind` = 'finetune'")
    assert len(finetune_runs) == 1, "the fine-tune's MLflow run must be found again, not duplicated"
