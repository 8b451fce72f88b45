"""MLflow lineage and the Prefect task, against a real SQLite MLflow store and Prefect harness."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tuneops.settings import TuneopsSettings
from tuneops.spec import load_spec
from tuneops.tasks.data.store import LocalStore
from tuneops.tasks.data.tracking import log_dataset_inputs, mlflow_digest
from tuneops.tasks.data.version import DatasetSources, version_files

from .conftest import valid_rows, write_jsonl

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_splits_logged_as_run_inputs_with_manifest(tmp_path: Path, mlflow_store):
    version = version_files(
        DatasetSources(write_jsonl(tmp_path / "train.jsonl", valid_rows(60))),
        name="claims",
        store=LocalStore(tmp_path / "store"),
        home=tmp_path / "home",
    )
    experiment = MlflowClient().create_experiment(
        "data-lineage", artifact_location=mlflow_store.artifact_root
    )
    with mlflow.start_run(experiment_id=experiment) as run:
        log_dataset_inputs(version)
    client = MlflowClient()
    inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
    by_context = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i for i in inputs}
    assert set(by_context) == set(version.splits)
    train = by_context["train"]
    assert train.dataset.digest == mlflow_digest(version.splits["train"].sha256)
    assert version.splits["train"].uri in train.dataset.source
    assert {t.key: t.value for t in train.tags}["tuneops.sha256"] == version.splits["train"].sha256
    found = mlflow.search_runs(
        experiment_names=["data-lineage"],
        filter_string=f"dataset.digest = '{mlflow_digest(version.splits['test'].sha256)}'",
        output_format="list",
    )
    assert [r.info.run_id for r in found] == [run.info.run_id]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "datasets/claims")]
    assert artifacts == ["datasets/claims/manifest.json"]


@pytest.mark.slow
def test_version_dataset_task_in_a_flow(tmp_path: Path, prefect_harness):
    from prefect import flow

    from tuneops.tasks.data.tasks import version_dataset

    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / "claims", project / "claims")
    shutil.copy(EXAMPLES / "tuneops.yaml", project / "tuneops.yaml")
    spec, _ = load_spec(project / "tuneops.yaml")
    settings = TuneopsSettings(project_dir=project)

    @flow
    def twice() -> tuple:
        return version_dataset(spec, settings), version_dataset(spec, settings)

    first, second = twice()
    assert first.created and not second.created and first.digest == second.digest
    assert first.splits["train"].rows == 320
    assert (project / ".tuneops" / "data" / "datasets" / "claims" / first.digest / "manifest.json").is_file()
