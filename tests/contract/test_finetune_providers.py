"""Every fine-tune provider adapter against the same assertions, each at its HTTP boundary.

- ``openai-stub``: ``OpenAIStubServer`` speaks OpenAI's documented files + fine-tuning protocol
  (the real cloud can't be reached from here).
- ``azure-stub*``: a PROTOCOL TEST. ``AzureOpenAIStubServer`` validates every request against
  Microsoft's published REST specifications (data-plane ``2025-04-01-preview``, management
  ``2024-10-01``, kept in ``tuneops/testing/reference/azure``) the way Microsoft's oav does, and
  answers in the spec's shapes (``pending``, null fields, deployments with provisioning states).
  It is not Azure. Three variants: a strict one (undeclared fields rejected, events newest first),
  a lenient one (undeclared fields dropped, events oldest first) and one that echoes undeclared
  fields (events oldest first); all serve 2 items a page, so lists must be followed with
  ``after``. Each must see zero spec violations from the adapter.
- ``local-service``: tuneops' own local service, for real (it trains a tiny model on CPU).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tuneops.errors import FineTuneFailedError, ProviderAuthError, ProviderRejectedError, SpecError
from tuneops.spec import AzureOpenAIProviderConfig
from tuneops.tasks.finetune.azure_openai import AzureOpenAIProvider
from tuneops.tasks.finetune.openai_compatible import OpenAICompatibleProvider
from tuneops.tasks.finetune.provider import FineTuneProvider
from tuneops.tasks.finetune.rules import PollPolicy, carries_key
from tuneops.tasks.finetune.types import FineTuneRequest, JobStatus
from tuneops.tasks.finetune.wait import follow_job
from tuneops.testing.azure_stub import AzureOpenAIStubServer
from tuneops.testing.openai_stub import OpenAIStubServer

FAST_POLL = PollPolicy(initial=0.05, max_interval=0.5, timeout=300)
AZURE_KEY = "azure-key-5e1f0c"
MGMT_TOKEN = "mgmt-token-77ab"


class StaticToken:
    """A credential for the management plane that needs no Azure AD (protocol test)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.scopes.append(scopes)
        return type("AccessToken", (), {"token": self.token, "expires_on": 2**31})()


@dataclass
class Target:
    provider: FineTuneProvider
    base_model: str
    server: Any = None


def azure_config(stub: AzureOpenAIStubServer, **changes: Any) -> AzureOpenAIProviderConfig:
    values = {
        "kind": "azure-openai",
        "endpoint": stub.endpoint,
        "api_version": "2025-04-01-preview",
        "subscription_id": "sub-1",
        "resource_group": "rg-1",
        "account_name": "acct-1",
        "management_endpoint": stub.root_url,
        **changes,
    }
    return AzureOpenAIProviderConfig.model_validate(values)


def azure_provider(stub: AzureOpenAIStubServer, **changes: Any) -> AzureOpenAIProvider:
    return AzureOpenAIProvider(
        azure_config(stub, **changes),
        api_key=AZURE_KEY,
        credential=StaticToken(MGMT_TOKEN),
        deploy_poll=PollPolicy(initial=0.01, max_interval=0.05, timeout=30),
    )


@pytest.fixture(scope="module")
def tiny_base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local service's tiny test base model, built once for this module."""
    from tuneops.serving.local.testing import build_test_base_model

    return build_test_base_model(tmp_path_factory.mktemp("tiny-base"))


AZURE_VARIANTS: dict[str, dict[str, Any]] = {
    "azure-stub": {"unknown_fields": "reject", "event_order": "newest-first"},
    "azure-stub-lenient": {"unknown_fields": "drop", "event_order": "oldest-first"},
    "azure-stub-echoing": {"unknown_fields": "keep", "event_order": "oldest-first"},
}


@pytest.fixture(
    params=["openai-stub", *AZURE_VARIANTS, pytest.param("local-service", marks=pytest.mark.slow)]
)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    if request.param == "openai-stub":
        with OpenAIStubServer(api_key="sk-contract") as stub:
            adapter = OpenAICompatibleProvider(kind="openai", base_url=stub.base_url, api_key="sk-contract")
            yield Target(adapter, "gpt-4o-mini-2024-07-18", stub)
            adapter.close()
    elif request.param in AZURE_VARIANTS:
        variant = AZURE_VARIANTS[request.param]
        with AzureOpenAIStubServer(
            api_key=AZURE_KEY, bearer_token=MGMT_TOKEN, page_size=2, **variant
        ) as stub:
            adapter = azure_provider(stub)
            yield Target(adapter, "gpt-4o-mini-2024-07-18", stub)
            adapter.close()
        # the server validates against Microsoft's published spec: the adapter broke none of it
        assert [str(v) for v in stub.violations] == []
        assert [str(v) for v in stub.response_violations] == []
    else:
        from tuneops.serving.local.testing import serve_locally

        base = request.getfixturevalue("tiny_base_model")
        folder = tmp_path_factory.mktemp("local-service")
        with serve_locally(folder / "models", base) as service:
            adapter = OpenAICompatibleProvider(
                kind="local", base_url=service.base_url, api_key=service.api_key or "tuneops-local"
            )
            yield Target(adapter, "tuneops-tiny", service)
            adapter.close()


def _train_file(folder: Path) -> Path:
    path = folder / "train.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Say hello {i}"},
                {"role": "assistant", "content": "hello"},
            ]
        }
        for i in range(12)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _request(target: Target, file_id: str, key: str) -> FineTuneRequest:
    return FineTuneRequest(
        base_model=target.base_model,
        training_file=file_id,
        validation_file=None,
        hyperparameters={"n_epochs": 1},
        suffix="contract",
        seed=3,
        metadata={},
        idempotency_key=key,
    )


def test_upload_is_reused_by_digest(target: Target, tmp_path: Path) -> None:
    path = _train_file(tmp_path)
    first = target.provider.upload_file(path, split="train", sha256="a" * 64)
    again = target.provider.upload_file(path, split="train", sha256="a" * 64)
    other = target.provider.upload_file(path, split="train", sha256="b" * 64)
    assert again.id == first.id and other.id != first.id
    assert "a" * 64 in first.filename


def test_job_lifecycle_in_our_own_types(target: Target, tmp_path: Path) -> None:
    upload = target.provider.upload_file(_train_file(tmp_path), split="train", sha256="c" * 64)
    job = target.provider.create_job(_request(target, upload.id, "key-1"))
    assert job.status in {JobStatus.VALIDATING_FILES, JobStatus.QUEUED, JobStatus.PENDING, JobStatus.RUNNING}
    assert carries_key(job, "key-1") and job.training_file == upload.id

    assert [j.id for j in target.provider.find_jobs("key-1")] == [job.id]
    assert target.provider.find_jobs("key-2") == []

    seen: list[Any] = []
    done = follow_job(target.provider, job, poll=FAST_POLL, on_events=seen.extend)
    assert done.status is JobStatus.SUCCEEDED and done.fine_tuned_model and done.trained_tokens
    steps = [e.step for e in seen if e.is_metrics]
    assert steps == sorted(steps) and len(steps) >= 1
    metrics = [e for e in seen if e.is_metrics]
    assert all(isinstance(e.train_loss or e.valid_loss, float) for e in metrics)
    assert any(isinstance(e.train_loss, float) for e in metrics)

    checkpoints = target.provider.list_checkpoints(job.id)
    assert checkpoints and [c.step for c in checkpoints] == sorted({c.step for c in checkpoints})
    assert checkpoints[-1].model == f"{done.fine_tuned_model}:ckpt-step-{checkpoints[-1].step}"

    deployed = target.provider.deploy(done, "contract-deployment")
    where = target.provider.inference_target(deployed)
    assert where.model == deployed.endpoint_model
    if target.provider.kind == "azure-openai":
        assert deployed.deployment == "contract-deployment" and where.api_version == "2025-04-01-preview"
    else:
        assert deployed.deployment is None and where.model == done.fine_tuned_model


def test_cancel_ends_a_job_cancelled(target: Target, tmp_path: Path) -> None:
    upload = target.provider.upload_file(_train_file(tmp_path), split="train", sha256="d" * 64)
    job = target.provider.create_job(_request(target, upload.id, "key-cancel"))
    cancelled = target.provider.cancel_job(job.id)
    if cancelled.status is not JobStatus.CANCELLED:  # some providers cancel asynchronously
        with pytest.raises(FineTuneFailedError, match="cancelled"):
            follow_job(target.provider, job, poll=FAST_POLL)
    assert target.provider.get_job(job.id).status is JobStatus.CANCELLED


# -- Azure specifics (protocol tests) ------------------------------------------------------------


@pytest.fixture
def azure() -> Iterator[AzureOpenAIStubServer]:
    with AzureOpenAIStubServer(api_key=AZURE_KEY, bearer_token=MGMT_TOKEN) as stub:
        yield stub


def test_azure_requests_carry_api_version_key_and_only_declared_fields(azure, tmp_path: Path) -> None:
    adapter = azure_provider(azure)
    upload = adapter.upload_file(_train_file(tmp_path), split="train", sha256="e" * 64)
    job = adapter.create_job(_request(Target(adapter, "gpt-4o-mini"), upload.id, "k"))
    assert azure.api_versions == {"2025-04-01-preview"}
    [(_, sent)] = [r for r in azure.received if r[0] == "FineTuning_Create"]
    assert sorted(sent) == ["hyperparameters", "model", "seed", "suffix", "training_file"]
    assert sent["hyperparameters"] == {"n_epochs": 1}  # top level: SupervisedMethodRequest has only type
    raw = azure.state.jobs[job.id]
    assert raw["suffix"].startswith("contract-tk") and carries_key(job, "k")  # the key rides in suffix
    assert job.status is JobStatus.PENDING  # Azure's word for queued (FineTuningState has no queued)
    assert raw["organization_id"] is None and raw["seed"] == 3  # nulls are tolerated
    assert azure.violations == []
    adapter.close()


def test_azure_training_type_is_sent_only_when_the_user_sets_it(tmp_path: Path) -> None:
    """``trainingType`` is documented by Microsoft only outside the REST spec: sent on request,
    and then the one field the validating server reports as undeclared."""
    with AzureOpenAIStubServer(api_key=AZURE_KEY, bearer_token=MGMT_TOKEN, unknown_fields="keep") as azure:
        adapter = azure_provider(azure, training_type="Global")
        upload = adapter.upload_file(_train_file(tmp_path), split="train", sha256="e" * 64)
        job = adapter.create_job(_request(Target(adapter, "gpt-4o-mini"), upload.id, "k"))
        adapter.close()
    assert azure.state.jobs[job.id]["trainingType"] == "Global"
    assert [(v.code, v.where) for v in azure.violations] == [
        ("OBJECT_ADDITIONAL_PROPERTIES", "body.trainingType")
    ]


def test_azure_deployment_puts_the_documented_body_and_waits_for_provisioning(azure, tmp_path: Path) -> None:
    adapter = azure_provider(azure, deployment_capacity=2)
    upload = adapter.upload_file(_train_file(tmp_path), split="train", sha256="f" * 64)
    job = follow_job(
        adapter, adapter.create_job(_request(Target(adapter, "gpt-4o-mini"), upload.id, "k")), poll=FAST_POLL
    )
    deployed = adapter.deploy(job, "support-bot-1")
    record = azure.deployments["support-bot-1"]
    assert record["sku"] == {"name": "standard", "capacity": 2}
    assert record["tags"]["tuneops-managed"] == "true" and record["tags"]["tuneops-job-id"] == job.id
    assert record["properties"]["model"] == {"format": "OpenAI", "name": job.fine_tuned_model, "version": "1"}
    assert record["properties"]["provisioningState"] == "Succeeded"
    gets = [r for r in azure.state.requests if r[0] == "GET" and r[1].endswith("/deployments/support-bot-1")]
    assert len(gets) >= azure.creating_polls
    assert adapter.deploy(job, "support-bot-1").deployment == deployed.deployment  # PUT is idempotent
    assert len(azure.deployments) == 1
    adapter.close()


def test_azure_failed_deployment_and_missing_account_are_clear(azure, tmp_path: Path) -> None:
    adapter = azure_provider(azure)
    upload = adapter.upload_file(_train_file(tmp_path), split="train", sha256="0" * 64)
    job = follow_job(
        adapter, adapter.create_job(_request(Target(adapter, "m"), upload.id, "k")), poll=FAST_POLL
    )
    azure.fail_deployments = True
    with pytest.raises(FineTuneFailedError, match="ended Failed"):
        adapter.deploy(job, "will-fail")
    adapter.close()
    incomplete = azure_provider(azure, account_name=None)
    with pytest.raises(SpecError, match=r"provider\.account_name"):
        incomplete.deploy(job, "x")
    incomplete.close()


def test_azure_wrong_keys_are_auth_errors(azure, tmp_path: Path) -> None:
    wrong = AzureOpenAIProvider(azure_config(azure), api_key="nope", credential=StaticToken("bad"))
    with pytest.raises(ProviderAuthError, match="HTTP 401"):
        wrong.upload_file(_train_file(tmp_path), split="train", sha256="1" * 64)
    wrong.close()


def test_azure_deployments_are_listed_across_pages_and_only_tuneops_ones_are_deleted(
    tmp_path: Path,
) -> None:
    with AzureOpenAIStubServer(api_key=AZURE_KEY, bearer_token=MGMT_TOKEN, page_size=1) as azure:
        adapter = azure_provider(azure)
        upload = adapter.upload_file(_train_file(tmp_path), split="train", sha256="2" * 64)
        request = _request(Target(adapter, "m"), upload.id, "k")
        job = follow_job(adapter, adapter.create_job(request), poll=FAST_POLL)
        adapter.deploy(job, "bot-1", model_name="bot")
        base = (
            "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.CognitiveServices/accounts/acct-1"
        )
        azure.add_deployment(f"{base}/deployments/someone-elses", "someone-elses", {})
        azure.add_deployment(
            f"{base}/deployments/other-model",
            "other-model",
            {"tags": {"tuneops-managed": "true", "tuneops-model": "x"}},
        )
        listed = {d.name: d for d in adapter.list_deployments()}
        assert sorted(listed) == ["bot-1", "other-model", "someone-elses"]  # three pages of one
        assert listed["bot-1"].model == job.fine_tuned_model and listed["bot-1"].created_at
        for name in ("someone-elses", "other-model"):
            with pytest.raises(ProviderRejectedError, match="not created by tuneops"):
                adapter.delete_deployment(name, model_name="bot")
        assert adapter.delete_deployment("bot-1", model_name="bot") is True
        assert adapter.delete_deployment("bot-1", model_name="bot") is False  # already gone
        adapter.close()
    assert sorted(azure.deployments) == ["other-model", "someone-elses"]
    assert [str(v) for v in azure.violations] == [] and [str(v) for v in azure.response_violations] == []
