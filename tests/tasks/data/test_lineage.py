"""The data stage's Prefect task under the Prefect harness (how splits reach MLflow as run
inputs is tested with the registry's adapter, in ``tests/registry/test_tracking.py``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tuneops.settings import TuneopsSettings
from tuneops.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


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
    assert first.splits["train"].rows == 96
    assert (project / ".tuneops" / "data" / "datasets" / "claims" / first.digest / "manifest.json").is_file()
