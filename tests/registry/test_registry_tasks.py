"""The Prefect tasks inside a real flow on the session's Prefect test server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from tuneops.registry.ledger import Ledger
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.tasks import register_model_task, set_challenger_task


@pytest.mark.slow
def test_register_and_set_challenger_in_a_flow(
    prefect_harness: None, build_version: Any, store: RegistryStore, mlflow_store: Any, tmp_path: Path
) -> None:
    built = build_version(job_id="j1")
    request = built.request
    state_db = f"sqlite:///{tmp_path / 'flow-state.db'}"

    @flow(name="registry-tasks-test")
    def retrain_tail() -> tuple[str, bool, bool]:
        version = register_model_task(request, mlflow_store.tracking_uri, mlflow_store.artifact_root)
        first = set_challenger_task(
            request.model_name, version.version, tracking_uri=mlflow_store.tracking_uri, state_db_url=state_db
        )
        again = set_challenger_task(
            request.model_name, version.version, tracking_uri=mlflow_store.tracking_uri, state_db_url=state_db
        )
        return version.version, first.changed, again.changed

    assert retrain_tail() == ("1", True, False)
    assert store.aliases("support-bot") == {"challenger": "1"}
    ledger = Ledger.open(state_db)
    (entry,) = ledger.history("support-bot")
    assert (entry.source, entry.reason) == ("flow", "quality gate passed")
    ledger.close()


def test_the_tasks_run_as_plain_functions(
    build_version: Any, store: RegistryStore, mlflow_store: Any
) -> None:
    built = build_version()
    again = register_model_task.fn(built.request, mlflow_store.tracking_uri, mlflow_store.artifact_root)
    assert again.version == built.version.version and not again.created
