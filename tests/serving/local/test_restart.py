"""A SIGKILL mid-training loses nothing: the job resumes from its checkpoint, files stay intact."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from openai import OpenAI

from tuneops.serving.local.launcher import start_service
from tuneops.serving.local.testing import as_jsonl, claims_chat_examples

pytestmark = pytest.mark.slow


def _poll(predicate, timeout: float = 240, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def test_sigkill_mid_training_then_restart_resumes_the_job(tmp_path: Path, tiny_test_model: Path) -> None:
    home = tmp_path / "models"
    first = start_service(home, tiny_profile="test", base_model_dirs=[tiny_test_model])
    try:
        client = OpenAI(base_url=first.base_url, api_key="x", max_retries=0)
        data = as_jsonl(claims_chat_examples(120, seed=3))
        train = client.files.create(file=("train.jsonl", data), purpose="fine-tune")
        valid = client.files.create(
            file=("valid.jsonl", as_jsonl(claims_chat_examples(12, seed=4))), purpose="fine-tune"
        )
        job = client.fine_tuning.jobs.create(
            model="tuneops-tiny",
            training_file=train.id,
            validation_file=valid.id,
            metadata={"case": "kill"},
            hyperparameters={"n_epochs": 4, "batch_size": 2, "learning_rate_multiplier": 0.3},
        )
        _poll(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data)
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    finally:
        first.kill()  # SIGKILL: no shutdown hook runs

    second = start_service(home, tiny_profile="test", base_model_dirs=[tiny_test_model])
    try:
        client = OpenAI(base_url=second.base_url, api_key="x", max_retries=0)
        assert [j.id for j in client.fine_tuning.jobs.list(metadata={"case": "kill"})] == [job.id]
        done = _poll(
            lambda: (
                (j := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed", "cancelled")
                and j
            )
        )
        assert done.status == "succeeded", done.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
        assert any(
            "service restarted while this job was running; it resumes from the checkpoint of epoch-" in m
            for m in messages
        )
        assert any(m.startswith("Resumed from the checkpoint of epoch") for m in messages)
        steps = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)]
        assert len(steps) == len(set(steps)) and max(steps) <= 4 * 60
        assert client.files.content(train.id).content == data
        assert done.fine_tuned_model in [m.id for m in client.models.list()]
    finally:
        second.stop()


def test_a_job_that_keeps_crashing_the_service_is_failed_with_a_reason(
    tmp_path: Path, tiny_test_model: Path
) -> None:
    """Recovery is bounded: after repeated restarts during the same job, it fails with a clear reason."""
    from tuneops.serving.local.service import MAX_RESUMES, LocalService, ServiceConfig

    service = LocalService(ServiceConfig(home=tmp_path / "m", base_model_dirs=(tiny_test_model,)))
    train = service.create_file("t.jsonl", "fine-tune", as_jsonl(claims_chat_examples(12)))
    job = service.create_job({"model": "tuneops-tiny", "training_file": train["id"]})
    for _ in range(MAX_RESUMES + 1):
        service.store.update_job(job["id"], status="running")  # as if the process died mid-training
        service.recover()
    failed = service.get_job(job["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "service_restarted"
    assert "Create a new job" in failed["error"]["message"]
    service.store.close()
