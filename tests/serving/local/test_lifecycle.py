"""The whole fine-tuning lifecycle through the official ``openai`` SDK only, against the real service."""

from __future__ import annotations

import time

import pytest
from openai import OpenAI

from tuneops.serving.local.launcher import ServiceProcess
from tuneops.serving.local.testing import as_jsonl, claims_chat_examples

pytestmark = pytest.mark.slow
TERMINAL = ("succeeded", "failed", "cancelled")


def wait_for(client: OpenAI, job_id: str, timeout: float = 300) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in TERMINAL:
            return job
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")


def test_full_lifecycle_with_the_official_sdk(local_service: ServiceProcess) -> None:
    client = OpenAI(base_url=local_service.base_url, api_key="unused", max_retries=0)
    train_rows, valid_rows = claims_chat_examples(80, seed=1), claims_chat_examples(24, seed=2)
    train = client.files.create(file=("train.jsonl", as_jsonl(train_rows)), purpose="fine-tune")
    valid = client.files.create(file=("valid.jsonl", as_jsonl(valid_rows)), purpose="fine-tune")
    assert {f.id for f in client.files.list(purpose="fine-tune")} == {train.id, valid.id}
    assert client.files.retrieve(train.id).bytes == len(as_jsonl(train_rows))

    job = client.fine_tuning.jobs.create(
        model="tuneops-tiny",
        training_file=train.id,
        validation_file=valid.id,
        suffix="claims",
        seed=7,
        metadata={"flow_run": "abc", "dataset": "claims@123"},
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": "auto"}
            },
        },
    )
    assert job.status in ("validating_files", "queued", "running") and job.seed == 7
    other = client.fine_tuning.jobs.create(
        model="tuneops-tiny", training_file=train.id, metadata={"flow_run": "other"}
    )
    client.fine_tuning.jobs.cancel(other.id)
    listed = client.fine_tuning.jobs.list(metadata={"flow_run": "abc"})
    assert [j.id for j in listed.data] == [job.id]
    assert {j.id for j in client.fine_tuning.jobs.list()} == {job.id, other.id}

    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model and done.fine_tuned_model.startswith("ft:tuneops-tiny:tuneops:claims:")
    assert done.trained_tokens and done.trained_tokens > 0 and done.finished_at
    assert done.hyperparameters.n_epochs == 3 and done.hyperparameters.batch_size == 4
    assert client.fine_tuning.jobs.retrieve(other.id).status == "cancelled"

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=7))  # iterating pages through them all
    messages = [e.message for e in reversed(events)]
    assert (
        messages[0].startswith("Validating training file")
        and messages[-1] == "The job has successfully completed"
    )
    steps = [e.data for e in events if e.type == "metrics" and "train_loss" in (e.data or {})]
    assert len(steps) == 3 * 20 and all(s["train_loss"] > 0 for s in steps)
    validation = [e.data for e in reversed(events) if e.type == "metrics" and "valid_loss" in (e.data or {})]
    base_loss, *epoch_losses = [v["valid_loss"] for v in validation]
    assert validation[0].get("base_model") is True and len(epoch_losses) >= 1
    # Honest check of training: the adapter is measurably better than the base on held-out data.
    assert min(epoch_losses) < base_loss - 0.2, (base_loss, epoch_losses)

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == sorted((c.step_number for c in checkpoints), reverse=True)
    assert checkpoints and all(
        c.fine_tuned_model_checkpoint.startswith(done.fine_tuned_model + ":ckpt-step-") for c in checkpoints
    )
    assert all(c.metrics.valid_loss is not None for c in checkpoints)
    # Every epoch trained is a checkpoint carrying its epoch, step and validation loss, so a client
    # can pick the final or the best one and see overfitting.
    epochs_run = len(epoch_losses)
    assert [c.metrics.epoch for c in reversed(checkpoints)] == list(range(1, epochs_run + 1))  # type: ignore[attr-defined]
    assert [c.metrics.valid_loss for c in reversed(checkpoints)] == pytest.approx(epoch_losses)
    assert all(c.metrics.step == c.step_number and c.metrics.full_valid_loss for c in checkpoints)
    created = next(e.data for e in events if (e.data or {}).get("fine_tuned_model") == done.fine_tuned_model)
    assert created["final_epoch"] == epochs_run and created["stopped_early"] == (epochs_run < 3)
    assert epoch_losses[created["best_epoch"] - 1] == pytest.approx(min(epoch_losses))
    assert (
        created["best_checkpoint"]
        == checkpoints[epochs_run - created["best_epoch"]].fine_tuned_model_checkpoint
    )

    results = client.files.content(done.result_files[0]).text.splitlines()
    assert results[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert len(results) == 1 + len(steps)

    models = [m.id for m in client.models.list()]
    assert "tuneops-tiny" in models and done.fine_tuned_model in models
    prompt = claims_chat_examples(1, seed=99)[0]["messages"][:2]
    for model in (done.fine_tuned_model, "tuneops-tiny", checkpoints[-1].fine_tuned_model_checkpoint):
        reply = client.chat.completions.create(model=model, messages=prompt, max_tokens=24, temperature=0)
        assert reply.model == model and reply.choices[0].finish_reason in ("stop", "length")
        assert reply.usage is not None and reply.usage.prompt_tokens > 10
        assert 0 <= reply.usage.completion_tokens <= 24  # the test-size model may stop at once
        stream = client.chat.completions.create(
            model=model,
            messages=prompt,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == reply.choices[0].message.content  # greedy: streaming and not agree
        assert (
            chunks[-1].usage is not None
            and chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
        )

    sampled = [
        client.chat.completions.create(
            model="tuneops-tiny", messages=prompt, max_tokens=12, seed=5, temperature=1.0
        )
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]  # the same seed samples the same text

    assert client.files.delete(valid.id).deleted
    assert client.files.content(train.id).content == as_jsonl(train_rows)


def test_one_job_at_a_time_and_cancel_stops_a_running_job(local_service: ServiceProcess) -> None:
    client = OpenAI(base_url=local_service.base_url, api_key="unused", max_retries=0)
    train = client.files.create(
        file=("t.jsonl", as_jsonl(claims_chat_examples(40, seed=5))), purpose="fine-tune"
    )
    long_job = client.fine_tuning.jobs.create(
        model="tuneops-tiny", training_file=train.id, hyperparameters={"n_epochs": 20, "batch_size": 1}
    )
    short_job = client.fine_tuning.jobs.create(
        model="tuneops-tiny", training_file=train.id, hyperparameters={"n_epochs": 1, "batch_size": 8}
    )
    deadline = time.monotonic() + 120
    while not any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(long_job.id, limit=5)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.fine_tuning.jobs.retrieve(long_job.id).status == "running"
    assert client.fine_tuning.jobs.retrieve(short_job.id).status == "queued"  # waits its turn

    cancelled = client.fine_tuning.jobs.cancel(long_job.id)
    assert cancelled.status == "cancelled"
    assert wait_for(client, short_job.id).status == "succeeded"  # the worker moved on
    final = client.fine_tuning.jobs.retrieve(long_job.id)
    assert final.status == "cancelled" and final.fine_tuned_model is None
    assert final.fine_tuned_model not in [m.id for m in client.models.list()]
