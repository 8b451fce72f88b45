"""``tuneops run`` exactly as a user runs it: a subprocess, no PREFECT_API_URL (so the project's
own Prefect server runs for the length of the run), the project's state kept under
``<project>/.tuneops``, a summary at the end."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from .conftest import MODEL_NAME, RetrainProject

pytestmark = pytest.mark.slow


def test_tuneops_run_on_the_embedded_default_prints_a_summary_and_keeps_state_in_the_project(
    retrain_project: RetrainProject,
):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "PREFECT_HOME"))}
    run = subprocess.run(
        [sys.executable, "-m", "tuneops.cli.main", "run", "--no-progress"],
        cwd=retrain_project.directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"{MODEL_NAME} version 1 (registered now)" in run.stdout
    assert "challenger → version 1" in run.stdout
    assert f"tuneops lineage {MODEL_NAME}/1" in run.stdout
    state = retrain_project.directory / ".tuneops"
    with sqlite3.connect(state / "prefect" / "prefect.db") as db:  # the run went through the project's server
        runs = db.execute(
            "SELECT f.name, r.state_type FROM flow_run r JOIN flow f ON f.id = r.flow_id"
        ).fetchall()
    assert ("retrain", "COMPLETED") in runs
    assert (state / "mlflow.db").is_file() and (state / "state.db").is_file()
    assert "Traceback" not in run.stdout + run.stderr
    assert "View at http" not in run.stdout + run.stderr  # that server has no UI: no dead links
