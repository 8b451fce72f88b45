"""Following a job to its end and recording it in a real MLflow store (SQLite in tmp_path).

The provider here is ``OpenAIStubServer``: a real HTTP server speaking OpenAI's documented
fine-tuning protocol through the official SDK, standing in for the cloud that can't be reached
from here (and can't be told to fail on cue).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tuneops.errors import FineTuneFailedError, ProviderError, TransientProviderError
from tuneops.tasks.finetune.openai_compatible import OpenAICompatibleProvider
from tuneops.tasks.finetune.rules import PollPolicy, RetryPolicy
from tuneops.tasks.finetune.tasks import submit_job_for, wait_for_job
from tuneops.tasks.finetune.tracking import LOSS_CURVE_ARTIFACT
from tuneops.tasks.finetune.types import JobStatus
from tuneops.testing.openai_stub import Fault, OpenAIStubServer

FAST_POLL = PollPolicy(initial=0.01, max_interval=0.02)
FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)


def _run(settings):
    client = MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name("support-bot")
    [run] = client.search_runs([experiment.experiment_id])
    return client, run


def test_job_is_followed_to_success_with_loss_curves_cost_and_png(
    stub, make_spec, settings, dataset, provider
) -> None:
    spec = make_spec(price_per_million_training_tokens=8.0)
    job = submit_job_for(spec, settings, dataset, provider=provider, retry=FAST)
    done = wait_for_job(spec, settings, job, provider=provider, poll=FAST_POLL, estimate_from=dataset)
    assert done.status is JobStatus.SUCCEEDED and done.fine_tuned_model.startswith("ft:gpt-4o-mini")
    assert done.endpoint_model == done.fine_tuned_model and done.trained_tokens == 3000

    client, run = _run(settings)
    train = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in sorted(train, key=lambda m: m.step)] == [1, 2, 3]
    assert len(client.get_metric_history(run.info.run_id, "valid_loss")) == 3
    metrics = run.data.metrics
    assert metrics["trained_tokens"] == 3000 and metrics["cost_usd"] == pytest.approx(0.024)
    assert metrics["estimated_training_tokens"] == 2 * dataset.splits["train"].tokens
    assert run.data.params["hp.n_epochs"] == "2" and run.data.params["job_id"] == job.id
    assert run.data.tags["tuneops.fine_tuned_model"] == done.fine_tuned_model
    png = Path(client.download_artifacts(run.info.run_id, LOSS_CURVE_ARTIFACT, str(settings.project_dir)))
    assert png.read_bytes().startswith(b"\x89PNG")


def test_polling_survives_rate_limits_resets_and_server_errors(
    stub, make_spec, settings, dataset, provider
) -> None:
    spec = make_spec()
    job = submit_job_for(spec, settings, dataset, provider=provider, retry=FAST)
    stub.inject("GET", r"^/fine_tuning/jobs/[^/]+$", Fault.server_error(500))
    stub.inject("GET", r"/events$", Fault.connection_reset())
    stub.inject("GET", r"^/fine_tuning/jobs/[^/]+$", Fault.rate_limited(retry_after=1))
    done = wait_for_job(spec, settings, job, provider=provider, poll=FAST_POLL, retry=FAST)
    assert done.status is JobStatus.SUCCEEDED and stub.job_count == 1


def test_polling_gives_up_after_its_budget_with_a_resume_hint(
    stub, make_spec, settings, dataset, provider
) -> None:
    spec = make_spec()
    job = submit_job_for(spec, settings, dataset, provider=provider, retry=FAST)
    stub.inject("GET", r"^/fine_tuning/jobs/[^/]+$", Fault.server_error(500), times=100)
    with pytest.raises(TransientProviderError) as caught:
        wait_for_job(spec, settings, job, provider=provider, poll=FAST_POLL, retry=FAST)
    assert "gave up after 4 failed polls" in caught.value.one_line()
    assert "re-run to resume waiting" in caught.value.one_line()


def test_a_failed_job_raises_with_the_providers_reason(make_spec, settings, dataset) -> None:
    reason = "training file has 12 examples with no assistant message"
    with OpenAIStubServer(fail_jobs_with=reason) as failing:
        adapter = OpenAICompatibleProvider(kind="openai", base_url=failing.base_url, api_key="unused")
        spec = make_spec()
        job = submit_job_for(spec, settings, dataset, provider=adapter, retry=FAST)
        with pytest.raises(FineTuneFailedError) as caught:
            wait_for_job(spec, settings, job, provider=adapter, poll=FAST_POLL)
        adapter.close()
    assert reason in caught.value.message and job.id in caught.value.message
    _, run = _run(settings)
    assert run.data.tags["tuneops.job_status"] == "failed"


def test_a_timeout_while_waiting_says_how_to_resume(stub, make_spec, settings, dataset, provider) -> None:
    spec = make_spec()
    job = submit_job_for(spec, settings, dataset, provider=provider, retry=FAST)
    stub.hold()
    with pytest.raises(ProviderError) as caught:
        wait_for_job(spec, settings, job, provider=provider, poll=PollPolicy(initial=0.01, timeout=0.2))
    assert "re-run the same command to resume" in caught.value.one_line()
    assert stub.job_count == 1


def test_resumed_wait_does_not_log_steps_twice(stub, make_spec, settings, dataset, provider) -> None:
    spec = make_spec()
    job = submit_job_for(spec, settings, dataset, provider=provider, retry=FAST)
    wait_for_job(spec, settings, job, provider=provider, poll=FAST_POLL)
    _, run = _run(settings)
    wait_for_job(spec, settings, job, provider=provider, poll=FAST_POLL, run_id=run.info.run_id)
    client, run = _run(settings)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(steps) == [1, 2, 3]
    # no dataset passed to the wait: the estimate comes from the job's own metadata
    assert run.data.metrics["estimated_training_tokens"] == 2 * dataset.splits["train"].tokens


def test_azure_job_is_deployed_and_the_deployment_is_what_inference_calls(
    make_spec, settings, dataset
) -> None:
    """PROTOCOL TEST: ``AzureOpenAIStubServer`` speaks Azure OpenAI's documented shapes; it is not Azure."""
    from tuneops.spec import AzureOpenAIProviderConfig
    from tuneops.tasks.finetune.azure_openai import AzureOpenAIProvider
    from tuneops.testing.azure_stub import AzureOpenAIStubServer

    class Token:
        token = "mgmt"

        def get_token(self, *scopes: str) -> Token:
            return self

    with AzureOpenAIStubServer(api_key="az", bearer_token="mgmt") as azure:
        config = AzureOpenAIProviderConfig(
            kind="azure-openai",
            endpoint=azure.endpoint,
            subscription_id="s",
            resource_group="g",
            account_name="a",
            management_endpoint=azure.root_url,
        )
        adapter = AzureOpenAIProvider(
            config, api_key="az", credential=Token(), deploy_poll=PollPolicy(initial=0.01, max_interval=0.02)
        )
        spec = make_spec()
        job = submit_job_for(spec, settings, dataset, provider=adapter, retry=FAST)
        done = wait_for_job(spec, settings, job, provider=adapter, poll=FAST_POLL)
        target = adapter.inference_target(done)
        adapter.close()
    assert done.deployment and done.deployment in azure.deployments
    assert done.deployment.startswith("support-bot-") and target.model == done.deployment
    _, run = _run(settings)
    assert run.data.tags["tuneops.endpoint_model"] == done.deployment


def test_logged_progress_says_each_status_once_and_steps_at_most_every_interval(caplog):
    import logging

    from tuneops.tasks.finetune.types import FineTuneJob, JobStatus, TrainingEvent
    from tuneops.tasks.finetune.wait import LoggedProgress

    now = [0.0]
    listener = LoggedProgress(logging.getLogger("progress-test"), every=10.0, clock=lambda: now[0])

    def job(status: JobStatus) -> FineTuneJob:
        return FineTuneJob(id="ftjob-1", status=status, provider="local", model="tuneops-tiny")

    def step(n: int, loss: float) -> TrainingEvent:
        return TrainingEvent(id=f"e{n}", created_at=n, message="", step=n, total_steps=9, train_loss=loss)

    with caplog.at_level(logging.INFO, logger="progress-test"):
        listener(job(JobStatus.QUEUED), [])
        listener(job(JobStatus.RUNNING), [step(1, 3.0), step(2, 2.5)])
        now[0] = 5.0
        listener(job(JobStatus.RUNNING), [step(3, 2.0)])  # within the interval: quiet
        now[0] = 12.0
        epoch_done = TrainingEvent(id="m1", created_at=4, message="Epoch 1/2: validation loss=1.6")
        listener(job(JobStatus.RUNNING), [step(4, 1.5), epoch_done])
        listener(job(JobStatus.SUCCEEDED), [])
    assert [r.getMessage() for r in caplog.records] == [
        "fine-tune ftjob-1 is queued",
        "fine-tune ftjob-1 is running",
        "step 2/9: train_loss 2.500, 1.0 s/step, about 7 s left",
        "Epoch 1/2: validation loss=1.6",
        "step 4/9: train_loss 1.500, 1.0 s/step, about 5 s left",
        "fine-tune ftjob-1 is succeeded",
    ]


def test_training_pace_comes_from_the_providers_step_times() -> None:
    from tuneops.tasks.finetune.types import TrainingEvent
    from tuneops.tasks.finetune.wait import training_pace

    def step(n: int, at: int, **extra: float) -> TrainingEvent:
        return TrainingEvent(id=f"e{n}", created_at=at, message="", step=n, total_steps=24, train_loss=1.0,
                             extra_metrics=dict(extra))  # fmt: skip

    assert training_pace(None, step(3, 60)) == ""
    assert training_pace(step(3, 60), step(3, 60)) == ""  # one step: no pace yet
    assert training_pace(step(1, 100), step(5, 180)) == ", 20.0 s/step, about 6 min left"
    assert training_pace(step(1, 100), step(5, 180, tokens_per_second=112.4)) == (
        ", 20.0 s/step, 112 tokens/s, about 6 min left"
    )
    assert training_pace(step(1, 100), step(24, 560)) == ", 20.0 s/step"  # done: nothing left


def test_the_overfitting_check_reaches_mlflow_from_the_checkpoints(
    make_spec, settings, dataset, schemas
) -> None:
    """Validation loss falls to epoch 2, then rises: best_epoch 2, +50% at the end, plot marked."""
    import json

    import httpx

    from tuneops.tasks.finetune.tracking import CHECKPOINTS_ARTIFACT
    from tuneops.testing.reference.openapi import assert_matches

    with OpenAIStubServer(valid_losses=[2.0, 1.2, 1.5, 1.8]) as overfit:
        adapter = OpenAICompatibleProvider(kind="openai", base_url=overfit.base_url, api_key="k")
        spec = make_spec(hyperparameters={"n_epochs": 4}).model_copy(
            update={"provider": make_spec().provider.model_copy(update={"base_url": overfit.base_url})}
        )
        job = submit_job_for(spec, settings, dataset, provider=adapter, retry=FAST)
        done = wait_for_job(spec, settings, job, provider=adapter, poll=FAST_POLL)
        adapter.close()
        listed_raw = httpx.get(f"{overfit.base_url}/fine_tuning/jobs/{job.id}/checkpoints?limit=3").json()
        rest = httpx.get(
            f"{overfit.base_url}/fine_tuning/jobs/{job.id}/checkpoints?after={listed_raw['last_id']}"
        ).json()
    # the stub answers in OpenAI's published shape, newest first, paged with `after`
    assert_matches("ListFineTuningJobCheckpointsResponse", listed_raw)
    assert [c["step_number"] for c in listed_raw["data"]] == [4, 3, 2] and listed_raw["has_more"]
    assert [c["step_number"] for c in rest["data"]] == [1] and not rest["has_more"]
    client, run = _run(settings)
    metrics = run.data.metrics
    assert metrics["best_epoch"] == 2 and metrics["best_step"] == 2
    assert metrics["stopped_early"] == 0.0
    assert metrics["validation_loss_rise"] == pytest.approx(0.5)
    assert metrics["best_valid_loss"] == 1.2 and metrics["final_valid_loss"] == 1.8
    assert "best epoch 2 (step 2)" in run.data.tags["tuneops.training"]
    saved = Path(client.download_artifacts(run.info.run_id, CHECKPOINTS_ARTIFACT, str(settings.project_dir)))
    listed = json.loads(saved.read_text())
    assert listed["final_model"] == done.fine_tuned_model
    assert [c["epoch"] for c in listed["checkpoints"]] == [1, 2, 3, 4]
    png = Path(client.download_artifacts(run.info.run_id, LOSS_CURVE_ARTIFACT, str(settings.project_dir)))
    assert png.read_bytes().startswith(b"\x89PNG")
