"""The Azure OpenAI path end to end at the HTTP boundary: crash and re-run, event order, retirement.

PROTOCOL TESTS: ``AzureOpenAIStubServer`` validates every request against Microsoft's published
REST specifications (data-plane ``2025-04-01-preview``, management ``2024-10-01``, vendored in
``tuneops/testing/reference/azure``) the way Microsoft's oav does, and each test asserts that
the adapter broke none of it. It is not Azure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tuneops.registry.mlflow_store import RegistryStore
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.data.types import DatasetVersion
from tuneops.tasks.finetune.azure_openai import AzureOpenAIProvider
from tuneops.tasks.finetune.openai_compatible import OpenAICompatibleProvider
from tuneops.tasks.finetune.rules import PollPolicy, RetryPolicy, carries_key
from tuneops.tasks.finetune.submit import job_key
from tuneops.tasks.finetune.tasks import retire_deployments_for, submit_job_for, wait_for_job
from tuneops.tasks.finetune.tracking import open_job_run
from tuneops.testing.azure_stub import AzureOpenAIStubServer
from tuneops.testing.openai_stub import OpenAIStubServer

FAST_POLL = PollPolicy(initial=0.01, max_interval=0.02)
FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)
KEY, TOKEN = "azure-test-key", "mgmt-test-token"


class StaticToken:
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return type("AccessToken", (), {"token": TOKEN, "expires_on": 2**31})()


class Crash(BaseException):
    """The process dying: not an error anything in tuneops catches."""


class CrashAfterCreate:
    """A provider whose process dies right after the server created the job, before anything
    (the caller, the MLflow run, the flow's state) has recorded it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def create_job(self, request: Any) -> Any:
        self.inner.create_job(request)
        raise Crash


def azure_spec(stub: AzureOpenAIStubServer, spec: Spec, **provider: Any) -> Spec:
    values = spec.model_dump(mode="json")
    values["provider"] = {
        "kind": "azure-openai",
        "endpoint": stub.endpoint,
        "subscription_id": "sub-1",
        "resource_group": "rg-1",
        "account_name": "acct-1",
        "management_endpoint": stub.root_url,
        **provider,
    }
    return Spec.model_validate(values)


def adapter_for(spec: Spec) -> AzureOpenAIProvider:
    return AzureOpenAIProvider(
        spec.provider,  # type: ignore[arg-type]
        api_key=KEY,
        credential=StaticToken(),
        deploy_poll=PollPolicy(initial=0.01, max_interval=0.02, timeout=30),
    )


@pytest.fixture(params=["reject", "drop", "keep"], ids=lambda m: f"unknown-fields-{m}")
def azure(request: pytest.FixtureRequest) -> Iterator[AzureOpenAIStubServer]:
    with AzureOpenAIStubServer(KEY, bearer_token=TOKEN, unknown_fields=request.param, page_size=2) as stub:
        yield stub
    assert [str(v) for v in stub.violations] == []  # Microsoft's published spec, not broken once
    assert [str(v) for v in stub.response_violations] == []


def test_a_crash_between_create_and_record_then_a_rerun_finds_the_one_job(
    azure: AzureOpenAIStubServer,
    make_spec: Callable[..., Spec],
    settings: TuneopsSettings,
    dataset: DatasetVersion,
) -> None:
    spec = azure_spec(azure, make_spec())
    dying = adapter_for(spec)
    with pytest.raises(Crash):
        submit_job_for(spec, settings, dataset, provider=CrashAfterCreate(dying), retry=FAST)
    dying.close()
    assert azure.job_count == 1

    rerun = adapter_for(spec)  # a new process: nothing remembered but what the server echoes
    job = submit_job_for(spec, settings, dataset, provider=rerun, retry=FAST)
    done = wait_for_job(spec, settings, job, provider=rerun, poll=FAST_POLL)
    again = submit_job_for(spec, settings, dataset, provider=rerun, retry=FAST)
    rerun.close()
    assert azure.job_count == 1 and job.id in azure.state.jobs and again.id == job.id
    assert done.deployment in azure.deployments and len(azure.deployments) == 1


@pytest.mark.parametrize("echo_metadata", [True, False], ids=["echoes-metadata", "drops-metadata"])
def test_openai_protocol_servers_that_echo_or_drop_metadata_both_end_with_one_findable_job(
    echo_metadata: bool, make_spec: Callable[..., Spec], settings: TuneopsSettings, dataset: DatasetVersion
) -> None:
    spec = make_spec()
    key = job_key(spec, dataset)
    with OpenAIStubServer(api_key="sk-x", echo_metadata=echo_metadata) as server:
        first = OpenAICompatibleProvider(kind="openai", base_url=server.base_url, api_key="sk-x")
        job = submit_job_for(spec, settings, dataset, provider=first, retry=FAST)
        first.close()
        live = [j for j in server.state.jobs.values() if j["status"] != "cancelled"]
        assert len(live) == 1 and live[0]["id"] == job.id and carries_key(job, key)
        if echo_metadata:  # the user's suffix untouched: the key rides in metadata
            assert server.job_count == 1 and live[0]["suffix"] == "support"
        else:  # the echo check caught the dropped metadata: that job was cancelled at once and
            # created again with the key in its suffix
            assert server.job_count == 2 and live[0]["suffix"].startswith("support-tk")

        rerun = OpenAICompatibleProvider(kind="openai", base_url=server.base_url, api_key="sk-x")
        again = submit_job_for(spec, settings, dataset, provider=rerun, retry=FAST)
        rerun.close()
    assert again.id == job.id


def _metrics(settings: TuneopsSettings, run_id: str) -> dict[str, list[tuple[int, float]]]:
    client = MlflowClient(settings.tracking_uri)
    names = client.get_run(run_id).data.metrics
    return {
        name: sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
        for name in names
        if name in ("train_loss", "valid_loss", "train_mean_token_accuracy")
    }


def test_events_served_oldest_or_newest_first_give_the_same_metrics_every_step_once(
    make_spec: Callable[..., Spec], settings: TuneopsSettings, dataset: DatasetVersion
) -> None:
    seen: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for order in ("oldest-first", "newest-first"):
        with AzureOpenAIStubServer(KEY, bearer_token=TOKEN, event_order=order, page_size=2, steps=9) as stub:
            spec = azure_spec(stub, make_spec())
            adapter = adapter_for(spec)
            job = submit_job_for(spec, settings, dataset, provider=adapter, retry=FAST)
            run_id = open_job_run(settings, spec.model.name, job, dataset_ref="", datasets=[], manifest={})
            wait_for_job(spec, settings, job, provider=adapter, poll=FAST_POLL, run_id=run_id)
            adapter.close()
        assert stub.violations == [] and stub.response_violations == []
        seen[order] = _metrics(settings, run_id)
    assert [step for step, _ in seen["oldest-first"]["train_loss"]] == list(range(1, 10))
    assert seen["oldest-first"] == seen["newest-first"]
    assert set(seen["newest-first"]) == {"train_loss", "valid_loss", "train_mean_token_accuracy"}


def _register(settings: TuneopsSettings, name: str, job_id: str, endpoint: str, gate: str) -> str:
    store = RegistryStore.from_settings(settings)
    store.ensure_registered_model(name)
    tags = {"tuneops.job_id": job_id, "tuneops.endpoint_model": endpoint, "tuneops.gate": gate}
    return store.create_version(name, "file:///nowhere", "", tags, "", None).version


def test_retire_deployments_deletes_the_gate_failed_one_and_never_anything_else(
    make_spec: Callable[..., Spec], settings: TuneopsSettings, dataset: DatasetVersion
) -> None:
    with AzureOpenAIStubServer(KEY, bearer_token=TOKEN, page_size=1) as azure:
        base = azure_spec(azure, make_spec())
        adapter = adapter_for(base)
        champion = wait_for_job(
            base, settings, submit_job_for(base, settings, dataset, provider=adapter, retry=FAST),
            provider=adapter, poll=FAST_POLL,
        )  # fmt: skip
        failed_spec = azure_spec(azure, make_spec(seed=7))
        failed = wait_for_job(
            failed_spec, settings,
            submit_job_for(failed_spec, settings, dataset, provider=adapter, retry=FAST),
            provider=adapter, poll=FAST_POLL,
        )  # fmt: skip
        name = base.model.name
        champion_version = _register(settings, name, champion.id, champion.deployment or "", "passed")
        RegistryStore.from_settings(settings).set_alias(name, "champion", champion_version)
        _register(settings, name, failed.id, failed.deployment or "", "failed")
        prefix = (
            "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.CognitiveServices/accounts/acct-1"
        )
        old = (datetime.now(UTC) - timedelta(days=30)).timestamp()
        azure.add_deployment(f"{prefix}/deployments/hand-made", "hand-made", {}, created=old)
        assert len(azure.deployments) == 3

        kept = retire_deployments_for(base, settings, keep=True, provider=adapter)
        assert [v.deployment.name for v in kept.due] == [failed.deployment] and kept.deleted == ()
        assert len(azure.deployments) == 3

        report = retire_deployments_for(base, settings, provider=adapter)
        assert report.deleted == (failed.deployment,)
        assert sorted(azure.deployments) == sorted([champion.deployment, "hand-made"])
        assert retire_deployments_for(base, settings, provider=adapter).deleted == ()  # safe to repeat

        later = datetime.now(UTC) + timedelta(days=30)  # the champion keeps its deployment forever
        assert retire_deployments_for(base, settings, now=later, provider=adapter).deleted == ()
        adapter.close()
    assert [str(v) for v in azure.violations] == [] and [str(v) for v in azure.response_violations] == []
