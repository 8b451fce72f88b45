"""Submitting exactly one job, whatever the provider does at the HTTP boundary.

These tests talk to ``OpenAIStubServer``: a real HTTP server speaking OpenAI's documented files and
fine-tuning protocol, reached with the official ``openai`` SDK. The stub stands in for the cloud
because the real one can't be reached from here and can't be made to fail on cue.
"""

from __future__ import annotations

import pytest

from tuneops.errors import (
    BudgetExceededError,
    FineTuneFailedError,
    ProviderAuthError,
    ProviderRejectedError,
    TransientProviderError,
)
from tuneops.settings import TuneopsSettings
from tuneops.tasks.finetune.dataset import local_split_path
from tuneops.tasks.finetune.openai_compatible import OpenAICompatibleProvider
from tuneops.tasks.finetune.rules import IDEMPOTENCY_METADATA_KEY, RetryPolicy
from tuneops.tasks.finetune.tasks import submit_job_for
from tuneops.tasks.finetune.types import JobStatus
from tuneops.testing.openai_stub import Fault

from .conftest import FAKE_KEY

FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def project(settings: TuneopsSettings) -> TuneopsSettings:
    return settings


def _submit(make_spec, project, dataset, provider, **kwargs):
    return submit_job_for(make_spec(), project, dataset, provider=provider, retry=FAST, **kwargs)


def test_submit_creates_one_job_with_metadata_seed_suffix_and_hyperparameters(
    stub, make_spec, project, dataset, provider
) -> None:
    job = _submit(make_spec, project, dataset, provider)
    assert stub.job_count == 1 and stub.file_count == 2
    raw = stub.state.jobs[job.id]
    assert raw["metadata"][IDEMPOTENCY_METADATA_KEY] == job.metadata[IDEMPOTENCY_METADATA_KEY]
    assert (raw["seed"], raw["suffix"], raw["hyperparameters"]["n_epochs"]) == (42, "support", 2)
    assert raw["validation_file"] is not None
    assert job.status is JobStatus.VALIDATING_FILES and job.provider == "openai"


def test_a_second_submission_attaches_and_reuses_uploads(stub, make_spec, project, dataset, provider) -> None:
    first = _submit(make_spec, project, dataset, provider)
    again = _submit(make_spec, project, dataset, provider)
    assert again.id == first.id
    assert stub.job_count == 1 and stub.file_count == 2
    assert [r for r in stub.state.requests if r == ("POST", "/files")] == [("POST", "/files")] * 2


def test_a_new_spec_on_the_same_data_reuses_the_uploaded_files(
    stub, make_spec, project, dataset, provider
) -> None:
    _submit(make_spec, project, dataset, provider)
    submit_job_for(make_spec(seed=7), project, dataset, provider=provider, retry=FAST)
    assert stub.job_count == 2 and stub.file_count == 2


@pytest.mark.parametrize(
    "fault",
    [
        Fault.server_error(500),
        Fault.server_error(503),
        Fault.connection_reset(),
        Fault.lost_after_handling(),
        Fault.timeout_after_handling(delay=3.0),
    ],
    ids=["500", "503", "reset-before", "lost-after-create", "timeout-after-create"],
)
def test_faults_on_create_still_end_with_exactly_one_job(
    stub, make_spec, project, dataset, provider, fault
) -> None:
    stub.inject("POST", r"^/fine_tuning/jobs$", fault)
    job = _submit(make_spec, project, dataset, provider)
    assert stub.job_count == 1
    assert job.id in stub.state.jobs


def test_rate_limit_with_retry_after_is_waited_out(stub, make_spec, project, dataset, provider) -> None:
    stub.inject("POST", r"^/fine_tuning/jobs$", Fault.rate_limited(retry_after=1), times=2)
    stub.inject("GET", r"^/fine_tuning/jobs$", Fault.rate_limited(retry_after=1))
    sleeps: list[float] = []
    from tuneops.tasks.finetune.submit import submit_job

    paths = {s: local_split_path(dataset, s, project) for s in ("train", "validation")}
    job = submit_job(provider, make_spec(), dataset, paths, policy=FAST, sleep=sleeps.append)
    assert stub.job_count == 1 and job.id in stub.state.jobs
    assert sleeps == [1.0, 1.0, 1.0]  # Retry-After honoured as a floor over the 0.01 s backoff


def test_faults_on_lookup_and_upload_are_retried(stub, make_spec, project, dataset, provider) -> None:
    stub.inject("GET", r"^/fine_tuning/jobs$", Fault.server_error(502))
    stub.inject("GET", r"^/files$", Fault.connection_reset())
    stub.inject("POST", r"^/files$", Fault.server_error(500))
    _submit(make_spec, project, dataset, provider)
    assert stub.job_count == 1 and stub.file_count == 2


def test_persistent_failure_gives_up_with_a_clear_message(
    stub, make_spec, project, dataset, provider
) -> None:
    stub.inject("POST", r"^/fine_tuning/jobs$", Fault.server_error(500), times=100)
    with pytest.raises(TransientProviderError) as caught:
        _submit(make_spec, project, dataset, provider)
    text = caught.value.one_line()
    assert "gave up after 4 attempts" in text and "HTTP 500" in text and "never creates a second job" in text
    assert stub.job_count == 0


def test_a_lost_create_is_found_even_with_a_small_retry_budget(stub, make_spec, project, dataset) -> None:
    adapter = OpenAICompatibleProvider(kind="openai", base_url=stub.base_url, api_key=FAKE_KEY)
    stub.inject("POST", r"^/fine_tuning/jobs$", Fault.lost_after_handling())
    policy = RetryPolicy(max_attempts=2, base_delay=0.01)
    job = submit_job_for(make_spec(), project, dataset, provider=adapter, retry=policy)
    adapter.close()
    assert stub.job_count == 1 and job.id in stub.state.jobs


def test_budget_guard_refuses_before_any_request(stub, make_spec, project, dataset, provider) -> None:
    tokens = dataset.splits["train"].tokens
    spec = make_spec(max_training_tokens=2 * tokens - 1)  # n_epochs is 2
    with pytest.raises(BudgetExceededError, match=f"{2 * tokens:,}"):
        submit_job_for(spec, project, dataset, provider=provider, retry=FAST)
    assert stub.state.requests == []


def test_wrong_key_is_an_auth_error_that_does_not_echo_the_key(stub, make_spec, project, dataset) -> None:
    wrong = "sk-proj-wrongkey-0123456789abcdef"
    adapter = OpenAICompatibleProvider(kind="openai", base_url=stub.base_url, api_key=wrong)
    with pytest.raises(ProviderAuthError) as caught:
        submit_job_for(make_spec(), project, dataset, provider=adapter, retry=FAST)
    adapter.close()
    text = caught.value.one_line()
    assert "HTTP 401" in text and "Incorrect API key" in text and "check the provider's API key" in text
    assert wrong[:8] not in text and wrong[-4:] not in text


def test_a_rejected_request_is_not_retried(stub, make_spec, project, dataset, provider) -> None:
    stub.state.files.clear()  # nothing to reuse
    stub.inject("POST", r"^/files$", Fault("status", status=400))
    with pytest.raises(ProviderRejectedError, match="HTTP 400"):
        _submit(make_spec, project, dataset, provider)
    assert stub.job_count == 0


def test_a_failed_job_is_reported_not_silently_replaced(stub, make_spec, project, dataset, provider) -> None:
    job = _submit(make_spec, project, dataset, provider)
    provider.cancel_job(job.id)
    with pytest.raises(FineTuneFailedError) as caught:
        _submit(make_spec, project, dataset, provider)
    assert job.id in caught.value.message and "--attempt 2" in caught.value.one_line()
    assert stub.job_count == 1
    second = _submit(make_spec, project, dataset, provider, attempt=2)
    assert second.id != job.id and stub.job_count == 2


def test_lora_settings_go_to_the_local_service_only() -> None:
    from tuneops.spec import Spec
    from tuneops.tasks.finetune.submit import hyperparameters_for

    base = {
        "model": {"name": "m", "base_model": "tuneops-tiny"},
        "data": {"train": "train.jsonl"},
        "finetune": {"hyperparameters": {"n_epochs": 2}, "lora": {"rank": 4, "target_modules": ["c_attn"]}},
    }
    local = hyperparameters_for(Spec.model_validate(base))
    assert local == {
        "n_epochs": 2,
        "lora_r": 4,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "lora_target_modules": ["c_attn"],
    }
    cloud = hyperparameters_for(Spec.model_validate({**base, "provider": {"kind": "openai"}}))
    assert cloud == {"n_epochs": 2}
