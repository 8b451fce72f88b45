"""The pure decisions of the fine-tune stage: keys, reuse, backoff, cost guard, status."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tuneops.errors import BudgetExceededError
from tuneops.tasks.finetune import rules
from tuneops.tasks.finetune.types import FineTuneJob, JobStatus, TrainingEvent

KEY_ARGS = {
    "dataset_digests": {"train": "a" * 64, "validation": "b" * 64},
    "base_model": "tuneops-tiny",
    "hyperparameters": {"n_epochs": 2},
    "model_name": "support-bot",
    "suffix": "v1",
    "seed": 42,
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("validating_files", JobStatus.VALIDATING_FILES),
        ("queued", JobStatus.QUEUED),
        ("pending", JobStatus.PENDING),
        ("notRunning", JobStatus.PENDING),
        ("running", JobStatus.RUNNING),
        ("Running", JobStatus.RUNNING),
        ("paused", JobStatus.PAUSED),
        ("succeeded", JobStatus.SUCCEEDED),
        ("failed", JobStatus.FAILED),
        ("cancelled", JobStatus.CANCELLED),
        ("canceled", JobStatus.CANCELLED),
        ("something_new", JobStatus.UNKNOWN),
        (None, JobStatus.UNKNOWN),
        ("", JobStatus.UNKNOWN),
    ],
)
def test_statuses_normalise_across_providers(raw: str | None, expected: JobStatus) -> None:
    assert rules.normalize_status(raw) is expected


@pytest.mark.parametrize("status", list(JobStatus))
def test_only_final_states_are_terminal_and_only_succeeded_is_success(status: JobStatus) -> None:
    final = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    assert rules.is_terminal(status) is (status in final)
    assert rules.is_success(status) is (status is JobStatus.SUCCEEDED)


def test_idempotency_key_is_stable_and_fits_metadata() -> None:
    key = rules.idempotency_key(**KEY_ARGS)
    assert key == rules.idempotency_key(
        **{**KEY_ARGS, "dataset_digests": {"validation": "b" * 64, "train": "a" * 64}}
    )
    assert len(key) == 64 and len(rules.IDEMPOTENCY_METADATA_KEY) <= 64


@pytest.mark.parametrize(
    "change",
    [
        {"dataset_digests": {"train": "c" * 64, "validation": "b" * 64}},
        {"dataset_digests": {"train": "a" * 64}},
        {"base_model": "other"},
        {"hyperparameters": {"n_epochs": 3}},
        {"hyperparameters": {}},
        {"model_name": "other-bot"},
        {"suffix": None},
        {"seed": 7},
        {"attempt": 2},
    ],
)
def test_idempotency_key_changes_with_every_input(change: dict) -> None:
    assert rules.idempotency_key(**{**KEY_ARGS, **change}) != rules.idempotency_key(**KEY_ARGS)


def test_attempt_starts_at_one() -> None:
    with pytest.raises(ValueError):
        rules.idempotency_key(**KEY_ARGS, attempt=0)


def _job(job_id: str, status: JobStatus, key: str = "k", created: int = 1) -> FineTuneJob:
    return FineTuneJob(
        id=job_id,
        status=status,
        provider="openai",
        model="m",
        created_at=created,
        metadata={rules.IDEMPOTENCY_METADATA_KEY: key},
    )


def test_reconcile_prefers_succeeded_then_live_newest_first() -> None:
    jobs = [
        _job("a", JobStatus.RUNNING, created=5),
        _job("b", JobStatus.SUCCEEDED, created=1),
        _job("c", JobStatus.FAILED, created=9),
    ]
    assert rules.reconcile_jobs(jobs, "k").reuse.id == "b"
    live = [_job("a", JobStatus.QUEUED, created=1), _job("d", JobStatus.PENDING, created=3)]
    assert rules.reconcile_jobs(live, "k").reuse.id == "d"


def test_reconcile_never_reuses_failed_or_foreign_jobs() -> None:
    failed = rules.reconcile_jobs(
        [_job("c", JobStatus.CANCELLED), _job("x", JobStatus.RUNNING, key="other")], "k"
    )
    assert failed.reuse is None and failed.failed.id == "c"
    nothing = rules.reconcile_jobs([], "k")
    assert nothing == rules.Reconciliation(reuse=None, failed=None)


def test_unknown_state_counts_as_live() -> None:
    assert rules.reconcile_jobs([_job("u", JobStatus.UNKNOWN)], "k").reuse.id == "u"


def test_retry_delay_backs_off_exponentially_and_caps() -> None:
    policy = rules.RetryPolicy(base_delay=1, factor=2, max_delay=5)
    assert [rules.retry_delay(policy, n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 5, 5]


def test_retry_after_is_a_floor_within_limits() -> None:
    policy = rules.RetryPolicy(base_delay=1, max_delay=5, max_retry_after=30)
    assert rules.retry_delay(policy, 1, retry_after=7) == 7
    assert rules.retry_delay(policy, 3, retry_after=0.5) == 4
    assert rules.retry_delay(policy, 1, retry_after=3600) == 30
    with pytest.raises(ValueError):
        rules.retry_delay(policy, 0)


@given(st.integers(1, 50), st.one_of(st.none(), st.floats(0, 10_000)))
def test_retry_delay_is_always_bounded_and_honours_retry_after(
    attempt: int, retry_after: float | None
) -> None:
    policy = rules.RetryPolicy()
    delay = rules.retry_delay(policy, attempt, retry_after)
    assert 0 < delay <= max(policy.max_delay, policy.max_retry_after)
    if retry_after:
        assert delay >= min(retry_after, policy.max_retry_after)


def test_retry_budget() -> None:
    policy = rules.RetryPolicy(max_attempts=3)
    assert [rules.should_retry(policy, n) for n in (1, 2, 3)] == [True, True, False]


def test_poll_interval_grows_to_a_cap_and_honours_retry_after() -> None:
    policy = rules.PollPolicy(initial=1, factor=2, max_interval=5)
    assert [rules.poll_interval(policy, n) for n in range(5)] == [1, 2, 4, 5, 5]
    assert rules.poll_interval(policy, 0, retry_after=9) == 9


def test_cost_estimate_counts_epochs_and_assumes_auto() -> None:
    fixed = rules.estimate_cost(1000, 2, price_per_million=8.0)
    assert (fixed.training_tokens, fixed.epochs_assumed, fixed.cost_usd) == (2000, False, 0.016)
    auto = rules.estimate_cost(1000, "auto", price_per_million=0)
    assert (auto.epochs, auto.training_tokens, auto.epochs_assumed) == (
        rules.AUTO_EPOCHS_ESTIMATE,
        3000,
        True,
    )


def test_budget_guard_refuses_with_a_clear_message() -> None:
    estimate = rules.estimate_cost(1000, "auto", 0)
    rules.enforce_budget(estimate, None)
    rules.enforce_budget(estimate, 3000)
    with pytest.raises(BudgetExceededError) as caught:
        rules.enforce_budget(estimate, 2999, spec_path="tuneops.yaml")
    text = caught.value.one_line()
    assert "tuneops.yaml" in text and "max_training_tokens" in text and "3,000" in text
    assert "assumed for n_epochs: auto" in text and "no job was submitted" in text


def test_upload_names_carry_the_digest() -> None:
    sha = "0123456789abcdef" * 4
    name = rules.upload_filename("train", sha)
    assert rules.digest_from_filename(name) == sha
    assert rules.digest_from_filename("train.jsonl") is None
    assert rules.digest_from_filename("") is None


def _event(step: int | None, created: int, loss: float = 1.0) -> TrainingEvent:
    return TrainingEvent(id=f"e{created}", created_at=created, message="", step=step, train_loss=loss)


def test_new_metric_events_are_ordered_deduplicated_and_past_the_last_step() -> None:
    events = [_event(3, 5), _event(1, 1), _event(None, 2), _event(2, 3), _event(2, 4, loss=0.5)]
    fresh = rules.new_metric_events(events, after_step=1)
    assert [e.step for e in fresh] == [2, 3]
    assert fresh[0].train_loss == 0.5


def test_deployment_name_is_stable_short_and_safe() -> None:
    name = rules.deployment_name("support bot/v1" * 10, "ftjob-abc123")
    assert name == rules.deployment_name("support bot/v1" * 10, "ftjob-abc123")
    assert len(name) <= 64 and name.endswith("abc123")
    assert all(c.isalnum() or c in "-_." for c in name)


def test_failure_reason_falls_back_to_plain_words() -> None:
    assert rules.failure_reason(_job("a", JobStatus.CANCELLED)) == "cancelled"
    assert rules.failure_reason(_job("a", JobStatus.FAILED)) == "the provider gave no reason"
    job = FineTuneJob(id="a", status=JobStatus.FAILED, provider="p", model="m", error_message="bad file")
    assert rules.failure_reason(job) == "bad file"


def test_the_decision_modules_import_no_sdk() -> None:
    """Pure core: rules, submit and wait logic must not pull in openai/prefect/mlflow/boto3/torch."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import tuneops.tasks.finetune.rules, tuneops.tasks.finetune.submit, tuneops.tasks.finetune.wait\n"
        "sdks = ('openai', 'prefect', 'mlflow', 'boto3', 'torch', 'httpx')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(sdks)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_suffix_carries_a_short_tag_of_the_key_within_azures_40_characters() -> None:
    key = "3f" * 32
    assert rules.keyed_suffix("support", key) == "support-tk3f3f3f3f3f3f"
    assert rules.keyed_suffix(None, key) == "tk3f3f3f3f3f3f"
    long = rules.keyed_suffix("a very long/suffix with spaces" * 3, key)
    assert len(long) <= 40 and long.endswith("-tk3f3f3f3f3f3f")
    assert all(c.isalnum() or c in "-_" for c in long)


def test_a_job_carries_its_key_in_metadata_suffix_or_model_name() -> None:
    key = "ab" * 32
    plain = FineTuneJob(id="j", status=JobStatus.RUNNING, provider="p", model="m")
    assert not rules.carries_key(plain, key)
    by_metadata = FineTuneJob(
        id="j",
        status=JobStatus.RUNNING,
        provider="p",
        model="m",
        metadata={rules.IDEMPOTENCY_METADATA_KEY: key},
    )
    by_suffix = FineTuneJob(
        id="j", status=JobStatus.RUNNING, provider="p", model="m", suffix=f"x-{rules.suffix_tag(key)}"
    )
    by_model = FineTuneJob(
        id="j",
        status=JobStatus.SUCCEEDED,
        provider="p",
        model="m",
        fine_tuned_model=f"m.ft-1-{rules.suffix_tag(key)}",
    )
    assert all(rules.carries_key(j, key) for j in (by_metadata, by_suffix, by_model))
    assert not rules.carries_key(by_suffix, "cd" * 32)
    assert rules.reconcile_jobs([plain, by_suffix], key).reuse is by_suffix


def test_new_metric_events_given_logged_steps_keep_a_late_earlier_step() -> None:
    events = [_event(2, 9), _event(5, 10), _event(3, 11)]
    assert [e.step for e in rules.new_metric_events(events, {1, 4, 5})] == [2, 3]
    assert [e.step for e in rules.new_metric_events(events, after_step=4)] == [5]


@pytest.mark.parametrize("server_order", ["oldest-first", "newest-first"])
def test_events_are_put_in_creation_order_whatever_the_server_order(server_order: str) -> None:
    oldest_first = [_event(None, 1), _event(1, 2), _event(None, 2), _event(2, 3)]
    oldest_first = [
        TrainingEvent(id=f"x{i}", created_at=e.created_at, message="", step=e.step)
        for i, e in enumerate(oldest_first)
    ]
    served = oldest_first if server_order == "oldest-first" else list(reversed(oldest_first))
    ordered = rules.chronological(served, lambda e: e.created_at)
    assert [e.id for e in ordered] == ["x0", "x1", "x2", "x3"]  # ties read the server's way round
    assert rules.unseen_events(ordered, {"x0", "x2"}) == [ordered[1], ordered[3]]
