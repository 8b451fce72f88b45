"""The ``finetune`` flow under Prefect, against real local stores, as users and crashes meet it.

The provider is ``OpenAIStubServer``: a real HTTP server speaking OpenAI's documented files and
fine-tuning protocol, reached with the official ``openai`` SDK. It stands in for the cloud, which
can't be reached from here and can't be held mid-job or killed around on cue.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tuneops.testing.openai_stub import Fault, OpenAIStubServer

FAKE_KEY = "sk-tuneops-flow-8d41c0b7e2a94f"


def _write_project(folder: Path, base_url: str, **finetune: object) -> Path:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Where is order {i}?"},
                {"role": "assistant", "content": f"Order {i} ships tomorrow."},
            ]
        }
        for i in range(20)
    ]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    spec = {
        "model": {"name": "orders-bot", "base_model": "gpt-4o-mini-2024-07-18"},
        "provider": {"kind": "openai", "base_url": base_url},
        "data": {"train": "train.jsonl", "split": {"validation": 0.2, "test": 0.0}},
        "finetune": {"suffix": "orders", "hyperparameters": {"n_epochs": 1}, **finetune},
    }
    path = folder / "tuneops.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.fixture
def stub() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer(api_key=FAKE_KEY, steps=4) as server:
        yield server


@pytest.fixture
def project_env(project_dir, mlflow_store, monkeypatch) -> dict[str, str]:
    """The environment a user's shell would have: key and store addresses, no cloud."""
    env = {
        "OPENAI_API_KEY": FAKE_KEY,
        "TUNEOPS_TRACKING_URI": mlflow_store.tracking_uri,
        "TUNEOPS_ARTIFACT_ROOT": mlflow_store.artifact_root,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _runs(mlflow_store):
    client = MlflowClient(mlflow_store.tracking_uri)
    experiment = client.get_experiment_by_name("orders-bot")
    return client, client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.mark.slow
def test_flow_fine_tunes_and_a_rerun_submits_nothing_new(
    prefect_harness, stub, project_dir, project_env, mlflow_store
) -> None:
    from tuneops.flows.finetune import finetune

    spec = _write_project(project_dir, stub.base_url)
    job = finetune(spec_path=str(spec), poll_interval=0.01)
    assert job.status == "succeeded" and job.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18")
    client, [run] = _runs(mlflow_store)
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in losses) == [1, 2, 3, 4]

    again = finetune(spec_path=str(spec), poll_interval=0.01)
    assert again.id == job.id and again.fine_tuned_model == job.fine_tuned_model
    assert stub.job_count == 1 and stub.file_count == 2
    assert [r for r in stub.state.requests if r[0] == "POST"] == [("POST", "/files")] * 2 + [
        ("POST", "/fine_tuning/jobs")
    ]


def _spawn_flow(spec: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Run the flow in a child process against the session's Prefect server, as a worker would."""
    from prefect.settings import PREFECT_API_URL

    child_env = {**os.environ, **env, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    code = (
        "from tuneops.flows.finetune import finetune\n"
        f"finetune(spec_path={str(spec)!r}, poll_interval=0.05)\n"
    )
    with log.open("wb") as handle:
        return subprocess.Popen(
            [sys.executable, "-c", code],
            env=child_env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _kill(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.mark.slow
def test_killed_after_job_creation_rerun_attaches_to_the_same_job(
    prefect_harness, stub, project_dir, project_env, mlflow_store, tmp_path
) -> None:
    from tuneops.flows.finetune import finetune

    spec = _write_project(project_dir, stub.base_url)
    stub.hold()  # the job stays running: the child is killed while it waits
    child = _spawn_flow(spec, project_env, tmp_path / "child.log")
    try:
        seen = stub.wait_for_request("GET", r"^/fine_tuning/jobs/[^/]+/events$", timeout=120, count=2)
        assert seen, (tmp_path / "child.log").read_text(errors="replace")[-3000:]
    finally:
        _kill(child)
    assert stub.job_count == 1
    stub.release()
    job = finetune(spec_path=str(spec), poll_interval=0.01)
    assert job.status == "succeeded" and job.id in stub.state.jobs
    assert stub.job_count == 1 and stub.file_count == 2


@pytest.mark.slow
def test_killed_before_job_creation_rerun_creates_exactly_one(
    prefect_harness, stub, project_dir, project_env, mlflow_store, tmp_path
) -> None:
    from tuneops.flows.finetune import finetune

    spec = _write_project(project_dir, stub.base_url)
    stub.inject("POST", r"^/fine_tuning/jobs$", Fault.hang(delay=120))  # killed mid-request, unhandled
    child = _spawn_flow(spec, project_env, tmp_path / "child.log")
    try:
        seen = stub.wait_for_request("POST", r"^/fine_tuning/jobs$", timeout=120)
        assert seen, (tmp_path / "child.log").read_text(errors="replace")[-3000:]
    finally:
        _kill(child)
    assert stub.job_count == 0 and stub.file_count == 2
    stub._released.set()
    job = finetune(spec_path=str(spec), poll_interval=0.01)
    assert job.status == "succeeded"
    assert stub.job_count == 1 and stub.file_count == 2  # the uploads were reused too


@pytest.mark.slow
def test_no_secret_reaches_mlflow_or_logs(
    prefect_harness, stub, project_dir, project_env, mlflow_store, caplog, capfd
) -> None:
    """A run with a fake key; then the key is searched for in the MLflow store and every log."""
    import logging

    from tuneops.flows.finetune import finetune

    caplog.set_level(logging.DEBUG)
    spec = _write_project(project_dir, stub.base_url)
    stub.inject("POST", r"^/fine_tuning/jobs$", Fault.server_error(500))  # error paths log too
    finetune(spec_path=str(spec), poll_interval=0.01)
    assert stub.state.requests, "the run reached the provider"
    needle = FAKE_KEY.encode()
    places = [mlflow_store.db_path, *Path(mlflow_store.artifact_root.removeprefix("file://")).rglob("*")]
    places += list((project_dir / ".tuneops").rglob("*"))
    places += _prefect_database_files()
    leaked = [str(p) for p in places if p.is_file() and needle in p.read_bytes()]
    assert leaked == []
    out, err = capfd.readouterr()
    assert FAKE_KEY not in caplog.text and FAKE_KEY not in out and FAKE_KEY not in err
    _, [run] = _runs(mlflow_store)
    assert run.data.params and FAKE_KEY not in json.dumps([run.data.params, run.data.tags])


def _prefect_database_files() -> list[Path]:
    """The Prefect server's SQLite files (flow/task runs, parameters, logs sent to the API)."""
    from prefect.settings import get_current_settings

    url = str(get_current_settings().server.database.connection_url.get_secret_value())
    assert "sqlite" in url, url
    database = Path(url.split(":///", 1)[1])
    files = list(database.parent.glob(database.name + "*"))
    assert files, f"no Prefect database at {database}"
    return files


def _tuneops(monkeypatch, *args: str) -> int:
    """Run the ``tuneops`` console entry point in-process, as a user's shell would."""
    from tuneops.cli.main import main

    monkeypatch.setattr(sys, "argv", ["tuneops", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0)


@pytest.mark.slow
def test_cli_prints_job_status_and_model_and_refuses_over_budget(
    prefect_harness, stub, project_dir, project_env, mlflow_store, capfd, monkeypatch
) -> None:
    spec = _write_project(project_dir, stub.base_url)
    code = _tuneops(monkeypatch, "finetune", "--spec", str(spec), "--poll-interval", "0.01")
    out, err = capfd.readouterr()
    [job_id] = list(stub.state.jobs)
    model = stub.state.jobs[job_id]["fine_tuned_model"]
    assert code == 0, err
    assert f"job {job_id}" in out and "succeeded" in out and f"fine-tuned model: {model}" in out

    over = _write_project(project_dir, stub.base_url, max_training_tokens=10)
    code = _tuneops(monkeypatch, "finetune", "--spec", str(over))
    out, err = capfd.readouterr()
    assert code == 1 and "max_training_tokens is 10" in err and "Traceback" not in err + out
    assert stub.job_count == 1


@pytest.mark.slow
def test_cli_reports_an_unknown_dataset_in_one_line(
    prefect_harness, stub, project_dir, project_env, capfd, monkeypatch
) -> None:
    spec = _write_project(project_dir, stub.base_url)
    code = _tuneops(monkeypatch, "finetune", "--spec", str(spec), "--dataset", "orders-bot@zz")
    _, err = capfd.readouterr()
    assert code == 1 and "error: no dataset called 'orders-bot'" in err and "Traceback" not in err
    assert stub.job_count == 0


@pytest.mark.slow
def test_acceptance_against_the_local_service(
    prefect_harness, project_dir, mlflow_store, monkeypatch, tmp_path
) -> None:
    """The real thing: tuneops' local service trains a tiny model; official SDK over real HTTP."""
    from tuneops.flows.finetune import finetune
    from tuneops.serving.local.testing import build_test_base_model, serve_locally
    from tuneops.tasks.finetune.openai_compatible import OpenAICompatibleProvider

    monkeypatch.setenv("TUNEOPS_TRACKING_URI", mlflow_store.tracking_uri)
    monkeypatch.setenv("TUNEOPS_ARTIFACT_ROOT", mlflow_store.artifact_root)
    base = build_test_base_model(tmp_path / "base")
    with serve_locally(tmp_path / "models", base) as service:
        spec = _write_project(project_dir, service.base_url)
        text = spec.read_text().replace("kind: openai", "kind: local")
        spec.write_text(text.replace("gpt-4o-mini-2024-07-18", "tuneops-tiny"))
        job = finetune(spec_path=str(spec), poll_interval=0.2)
        again = finetune(spec_path=str(spec), poll_interval=0.2)
        client = OpenAICompatibleProvider(
            kind="local", base_url=service.base_url, api_key="tuneops-local"
        ).client
        jobs = list(client.fine_tuning.jobs.list())
        models = [m.id for m in client.models.list()]
        client.close()
    assert job.status == "succeeded" and job.fine_tuned_model.startswith("ft:tuneops-tiny")
    assert again.id == job.id and len(jobs) == 1
    assert job.fine_tuned_model in models
    mlflow_client, [first, *_] = _runs(mlflow_store)
    losses = mlflow_client.get_metric_history(first.info.run_id, "train_loss")
    assert len(losses) >= 2 and all(m.value > 0 for m in losses)
    assert first.data.metrics["trained_tokens"] > 0
