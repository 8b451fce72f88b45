"""register_model against a real SQLite MLflow store, and the registered pyfunc against a real endpoint."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest

from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.register import register_model
from tuneops.registry.tracking import mlflow_digest

from .conftest import mlflow_client


def test_registers_one_version_with_the_conventional_tags(build_version: Any, store: RegistryStore) -> None:
    built = build_version()
    tags = built.version.tags
    assert built.version.created and built.version.version == "1"
    assert tags["tuneops.job_id"] == "ftjob-1"
    assert tags["tuneops.provider"] == "local"
    assert tags["tuneops.base_model"] == "tiny-gpt2"
    assert tags["tuneops.endpoint_model"] == "ft:tiny-gpt2:ftjob-1"
    assert tags["tuneops.gate"] == "passed"
    assert tags["tuneops.eval_run_id"] == built.eval_run_id
    assert tags["tuneops.flow_run_id"] == built.request.flow_run_id
    for split in ("train", "validation", "test"):
        assert tags[f"tuneops.{split}_digest"] == built.manifest["splits"][split]["sha256"]


def test_registering_the_same_job_twice_yields_one_version(build_version: Any, store: RegistryStore) -> None:
    built = build_version()
    again = register_model(built.request, store)
    assert again.version == built.version.version and not again.created
    assert [v.version for v in store.versions("support-bot")] == ["1"]


def test_a_crash_after_logging_reuses_the_logged_model(build_version: Any, store: RegistryStore) -> None:
    """Simulate a kill between logging the model and creating the version: no second run or model."""
    built = build_version()
    mlflow_client(store).delete_model_version("support-bot", built.version.version)
    runs_before = mlflow_client(store).search_runs([store.ensure_experiment("support-bot")])
    again = register_model(built.request, store)
    runs_after = mlflow_client(store).search_runs([store.ensure_experiment("support-bot")])
    assert again.created and again.run_id == built.version.run_id
    assert len(runs_after) == len(runs_before)


def test_dataset_inputs_are_logged_on_the_registration_run(build_version: Any, store: RegistryStore) -> None:
    built = build_version()
    run = store.get_run(built.version.run_id)
    by_split = {i.tags["tuneops.split"]: i for i in run.inputs}
    train = built.manifest["splits"]["train"]["sha256"]
    assert by_split["train"].digest == mlflow_digest(train)
    assert by_split["train"].tags["tuneops.sha256"] == train
    assert by_split["train"].source.endswith("train.jsonl") or "train.jsonl" in by_split["train"].source
    assert run.params["hp.n_epochs"] == "3"
    assert run.metrics["trained_tokens"] == 1234
    found = mlflow_client(store).search_runs(
        [run.experiment_id], filter_string=f"dataset.digest = '{mlflow_digest(train)}'"
    )
    assert run.run_id in {r.info.run_id for r in found}


@pytest.mark.slow
def test_the_registered_model_answers_chat_by_alias(
    build_version: Any, store: RegistryStore, chat_stub: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TUNEOPS_TEST_ENDPOINT_KEY", "sk-secret-never-stored-123")
    built = build_version(api_key_env="TUNEOPS_TEST_ENDPOINT_KEY")
    store.set_alias("support-bot", "champion", built.version.version)
    with store.fluent():
        model = mlflow.pyfunc.load_model("models:/support-bot@champion")
    conversations = [
        [{"role": "user", "content": "hello"}],
        [{"role": "system", "content": "s"}, {"role": "user", "content": "bye"}],
    ]
    assert model.predict(conversations) == ["ft:tiny-gpt2:ftjob-1: hello", "ft:tiny-gpt2:ftjob-1: bye"]
    frame = pd.DataFrame({"messages": conversations})
    assert model.predict(frame) == ["ft:tiny-gpt2:ftjob-1: hello", "ft:tiny-gpt2:ftjob-1: bye"]
    assert model.predict(["just a prompt"]) == ["ft:tiny-gpt2:ftjob-1: just a prompt"]
    assert chat_stub.auth_headers[-1] == "Bearer sk-secret-never-stored-123"
    # the key is read from the environment at load time and stored nowhere
    stored = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert stored
    for path in stored:
        assert b"sk-secret-never-stored-123" not in path.read_bytes(), path


def test_concurrent_registrations_of_one_job_leave_one_version(
    build_version: Any, store: RegistryStore
) -> None:
    built = build_version(job_id="j-race")
    mlflow_client(store).delete_model_version(
        "support-bot", built.version.version
    )  # start from "not registered"
    request = replace(built.request, job_id="j-race-2")
    results: list[str] = []
    errors: list[BaseException] = []

    def register() -> None:
        try:
            results.append(register_model(request, store).version)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=register) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    remaining = [v.version for v in store.versions("support-bot") if v.tags["tuneops.job_id"] == "j-race-2"]
    assert len(remaining) == 1 and set(results) == set(remaining)
