"""``tuneops run`` with ``provider.kind: azure-openai``, as a user runs it, against a server that
validates every fine-tuning and deployment request against Microsoft's spec.

PROTOCOL TEST: ``AzureOpenAIStubServer`` checks each fine-tuning (data plane ``2025-04-01-preview``)
and deployments (management ``2024-10-01``) request against Microsoft's published REST
specifications, vendored in ``tuneops/testing/reference/azure``, the way Microsoft's oav does. It
is not Azure. Evaluation calls the deployments on Azure's v1 inference surface
(``{endpoint}/openai/v1/chat/completions``, ``model`` = deployment name); **chat inference is not
in the vendored spec**, so those calls are not spec-validated: the stub answers them with scripted
text per deployment, in OpenAI's ``CreateChatCompletionResponse`` shape (checked against OpenAI's
OpenAPI description in ``tests/contract/test_azure_chat_stub.py``). The only other stand-in is the
Azure AD token source for the management plane (no tenant here).

The base model is reached the way Azure serves any model: through a deployment, here one the
user made (named after the model, as evaluation asks for ``model.base_model``) and tuneops must
never delete.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml

from tuneops.testing.azure_stub import AzureOpenAIStubServer, ServedModel
from tuneops.testing.chat_stub import Messages

pytestmark = pytest.mark.slow

KEY, TOKEN = "azure-run-key-3f0a", "mgmt-run-token-77"
MODEL, BASE = "orders-bot", "gpt-4o-mini-2024-07-18"
SUBSCRIPTION, GROUP, ACCOUNT = "sub-run", "rg-run", "acct-run"
DEPLOYMENTS = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.CognitiveServices"
    f"/accounts/{ACCOUNT}/deployments"
)
ANSWERS = {f"Where is order {i}?": f"Order {i} ships in {i % 5 + 1} days." for i in range(60)}
WRONG = "I cannot say."


class StaticToken:
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return type("AccessToken", (), {"token": TOKEN, "expires_on": 2**31})()


def _question(messages: Messages) -> str:
    return str([m["content"] for m in messages if m.get("role") == "user"][-1])


def fine_tune_wins(served: ServedModel, messages: Messages) -> str:
    """The fine-tune answers every test question right; the base model knows nothing."""
    return ANSWERS[_question(messages)] if served.fine_tuned else WRONG


def fine_tune_loses(served: ServedModel, messages: Messages) -> str:
    """The fine-tune forgot what the base model knew."""
    return WRONG if served.fine_tuned else ANSWERS[_question(messages)]


@pytest.fixture
def azure(request: pytest.FixtureRequest) -> Iterator[AzureOpenAIStubServer]:
    mode = getattr(request, "param", "reject")
    with AzureOpenAIStubServer(
        KEY,
        bearer_token=TOKEN,
        unknown_fields=mode,
        event_order="oldest-first",
        page_size=2,
        steps=3,
        creating_polls=2,
    ) as stub:
        # the base model's deployment, made by the user in the portal: not tuneops'
        body = {"properties": {"model": {"format": "OpenAI", "name": BASE, "version": "2024-07-18"}}}
        stub.add_deployment(f"{DEPLOYMENTS}/{BASE}", BASE, body)
        yield stub


def _project(folder: Path, azure: AzureOpenAIStubServer) -> Path:
    def rows(numbers: range) -> str:
        return "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"Where is order {i}?"},
                        {"role": "assistant", "content": ANSWERS[f"Where is order {i}?"]},
                    ]
                }
            )
            + "\n"
            for i in numbers
        )

    (folder / "train.jsonl").write_text(rows(range(30)), encoding="utf-8")
    (folder / "validation.jsonl").write_text(rows(range(30, 40)), encoding="utf-8")
    (folder / "test.jsonl").write_text(rows(range(40, 60)), encoding="utf-8")
    spec = {
        "model": {"name": MODEL, "base_model": BASE},
        "provider": {
            "kind": "azure-openai",
            "endpoint": azure.endpoint,
            "subscription_id": SUBSCRIPTION,
            "resource_group": GROUP,
            "account_name": ACCOUNT,
            "management_endpoint": azure.root_url,
            "deployment_price_per_hour": 1.7,
        },
        "data": {
            "name": "orders",
            "train": "train.jsonl",
            "validation": "validation.jsonl",
            "test": "test.jsonl",
        },
        "finetune": {"suffix": "orders", "hyperparameters": {"n_epochs": 1}},
        "evaluation": {
            "metrics": ["f1"],
            "gates": [{"metric": "f1", "min_absolute_change": 0.05}],
            "max_tokens": 40,
            "bootstrap_resamples": 200,
        },
    }
    path = folder / "tuneops.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def _tuneops(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    from tuneops.cli.main import main

    monkeypatch.setattr(sys, "argv", ["tuneops", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0)


@pytest.fixture
def run_project(project_dir, mlflow_store, monkeypatch) -> Any:
    """``tuneops run`` in a fresh Azure project; returns (exit code, stdout, stderr)."""

    def run(azure: AzureOpenAIStubServer, capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
        monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
        monkeypatch.setenv("TUNEOPS_TRACKING_URI", mlflow_store.tracking_uri)
        monkeypatch.setenv("TUNEOPS_ARTIFACT_ROOT", mlflow_store.artifact_root)
        monkeypatch.setattr("tuneops.tasks.finetune.azure_openai.default_credential", StaticToken)
        spec = _project(project_dir, azure)
        code = _tuneops(monkeypatch, "run", "--spec", str(spec), "--no-progress")
        out, err = capfd.readouterr()
        return code, out, err

    return run


def _version(mlflow_store: Any) -> Any:
    from tuneops.registry.mlflow_store import RegistryStore

    store = RegistryStore(mlflow_store.tracking_uri, mlflow_store.artifact_root)
    [version] = store.versions(MODEL)
    return version, store.aliases(MODEL)


def _no_spec_violations(azure: AzureOpenAIStubServer) -> None:
    """Microsoft's published spec, checked on every fine-tuning and deployments request."""
    assert [str(v) for v in azure.violations] == []
    assert [str(v) for v in azure.response_violations] == []
    assert azure.api_versions == {"2025-04-01-preview"}


@pytest.mark.parametrize("azure", ["reject", "drop"], indirect=True, ids=lambda m: f"unknown-fields-{m}")
def test_run_deploys_evaluates_the_deployment_and_keeps_a_passing_challengers_deployment(
    prefect_harness, azure, run_project, mlflow_store, capfd
) -> None:
    azure.chat_answer = fine_tune_wins
    code, out, err = run_project(azure, capfd)

    assert code == 0, out[-3000:] + err[-3000:]
    _no_spec_violations(azure)
    [job_id] = list(azure.state.jobs)
    [deployment] = [d for d in azure.deployments if d != BASE]
    assert azure.deployments[deployment]["tags"].get("tuneops-job-id") == job_id
    assert azure.deployments[deployment]["properties"]["provisioningState"] == "Succeeded"
    # evaluation called the fine-tune through its deployment and the base through the user's
    assert {model for model, status in azure.chat_requests if status == 200} == {deployment, BASE}
    assert all(status == 200 for _, status in azure.chat_requests)

    version, aliases = _version(mlflow_store)
    assert version.tags["tuneops.gate"] == "passed" and aliases.get("challenger") == version.version
    assert version.tags["tuneops.job_id"] == job_id and version.tags["tuneops.endpoint_model"] == deployment
    assert f"{MODEL} version 1 (registered now)" in out and "challenger → version 1" in out
    assert set(azure.deployments) == {BASE, deployment}  # the challenger's deployment is kept

    # the registered model answers through the same deployment, with the key's variable only
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@challenger")
    assert model.predict([[{"role": "user", "content": "Where is order 41?"}]]) == [
        ANSWERS["Where is order 41?"]
    ]
    assert azure.chat_requests[-1] == (deployment, 200)
    _no_spec_violations(azure)


def test_run_whose_fine_tune_fails_the_gate_deletes_only_its_deployment(
    prefect_harness, azure, run_project, mlflow_store, capfd
) -> None:
    azure.chat_answer = fine_tune_loses
    stranger = {
        "tags": {"owner": "someone-else"},
        "properties": {"model": {"format": "OpenAI", "name": "gpt-4o-2024-08-06", "version": "1"}},
    }
    azure.add_deployment(f"{DEPLOYMENTS}/their-model", "their-model", stranger, created=0)
    code, out, err = run_project(azure, capfd)

    assert code == 0, out[-3000:] + err[-3000:]
    _no_spec_violations(azure)
    [job_id] = list(azure.state.jobs)
    created = [path for method, path in azure.state.requests if method == "PUT"]
    deleted = [path for method, path in azure.state.requests if method == "DELETE"]
    [deployment] = [p.rsplit("/", 1)[-1] for p in created]
    assert [p.rsplit("/", 1)[-1] for p in deleted] == [deployment]  # it was deployed, then deleted
    assert {model for model, status in azure.chat_requests if status == 200} == {deployment, BASE}

    version, aliases = _version(mlflow_store)
    assert version.tags["tuneops.gate"] == "failed" and version.tags["tuneops.job_id"] == job_id
    assert "challenger" not in aliases and "champion" not in aliases
    # only the failed fine-tune's deployment went; the user's base and a stranger's stay
    assert set(azure.deployments) == {BASE, "their-model"}
