"""``tuneops finetune`` and ``tuneops registry deployments`` with ``provider.kind: azure-openai``,
as a user runs them, against a server that validates every request against Microsoft's spec.

PROTOCOL TEST: ``AzureOpenAIStubServer`` checks each request against Microsoft's published REST
specifications (data-plane ``2025-04-01-preview``, management ``2024-10-01``, vendored in
``tuneops/testing/reference/azure``) the way Microsoft's oav does. It is not Azure; the only
thing replaced is the Azure AD token source for the management plane (no tenant here).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tuneops.testing.azure_stub import AzureOpenAIStubServer

KEY, TOKEN = "azure-cli-key-51c2", "mgmt-cli-token-9e"


class StaticToken:
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return type("AccessToken", (), {"token": TOKEN, "expires_on": 2**31})()


@pytest.fixture(params=["drop", "keep"], ids=lambda m: f"unknown-fields-{m}")
def azure(request: pytest.FixtureRequest) -> Iterator[AzureOpenAIStubServer]:
    with AzureOpenAIStubServer(
        KEY,
        bearer_token=TOKEN,
        unknown_fields=request.param,
        event_order="oldest-first",
        page_size=2,
        steps=4,
    ) as stub:
        yield stub


def _project(folder: Path, azure: AzureOpenAIStubServer) -> Path:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Where is order {i}?"},
                {"role": "assistant", "content": "Soon."},
            ]
        }
        for i in range(20)
    ]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    spec = {
        "model": {"name": "orders-bot", "base_model": "gpt-4o-mini-2024-07-18"},
        "provider": {
            "kind": "azure-openai",
            "endpoint": azure.endpoint,
            "subscription_id": "sub-1",
            "resource_group": "rg-1",
            "account_name": "acct-1",
            "management_endpoint": azure.root_url,
            "deployment_price_per_hour": 1.7,
        },
        "data": {"train": "train.jsonl", "split": {"validation": 0.2, "test": 0.0}},
        "finetune": {"suffix": "orders", "hyperparameters": {"n_epochs": 1}},
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


@pytest.mark.slow
def test_finetune_deploys_with_zero_spec_violations_and_prune_deletes_only_the_gate_failed(
    prefect_harness, azure, project_dir, mlflow_store, monkeypatch, capfd
) -> None:
    from tuneops.registry.mlflow_store import RegistryStore

    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    monkeypatch.setenv("TUNEOPS_TRACKING_URI", mlflow_store.tracking_uri)
    monkeypatch.setenv("TUNEOPS_ARTIFACT_ROOT", mlflow_store.artifact_root)
    monkeypatch.setattr("tuneops.tasks.finetune.azure_openai.default_credential", StaticToken)
    spec = _project(project_dir, azure)

    code = _tuneops(monkeypatch, "finetune", "--spec", str(spec), "--poll-interval", "0.01")
    out, err = capfd.readouterr()
    assert code == 0, err
    [job_id] = list(azure.state.jobs)
    [deployment] = list(azure.deployments)
    assert f"job {job_id}" in out and f"deployment: {deployment}" in out
    assert _tuneops(monkeypatch, "finetune", "--spec", str(spec), "--poll-interval", "0.01") == 0
    assert azure.job_count == 1 and len(azure.deployments) == 1  # a re-run attaches and re-PUTs
    capfd.readouterr()

    code = _tuneops(monkeypatch, "registry", "deployments", "orders-bot", "--spec", str(spec), "--json")
    out, err = capfd.readouterr()
    [row] = json.loads(out)
    assert code == 0 and row["deployment"] == deployment and row["version"] is None
    assert row["verdict"] == "keep" and row["price_per_hour"] == 1.7  # unregistered: in its grace period

    store = RegistryStore(mlflow_store.tracking_uri, mlflow_store.artifact_root)
    store.ensure_registered_model("orders-bot")
    tags = {"tuneops.job_id": job_id, "tuneops.endpoint_model": deployment, "tuneops.gate": "failed"}
    store.create_version("orders-bot", "file:///nowhere", "", tags, "", None)
    code = _tuneops(monkeypatch, "registry", "deployments", "orders-bot", "--spec", str(spec))
    out, _ = capfd.readouterr()
    assert code == 0 and "1 due for retirement: re-run with --prune" in out and "1.70/hour" in out
    assert _tuneops(monkeypatch, "registry", "deployments", "orders-bot", "--spec", str(spec), "--json") == 0
    [row] = json.loads(capfd.readouterr()[0])
    assert (row["version"], row["gate"], row["verdict"]) == ("1", "failed", "retire")
    assert row["reason"] == "failed the quality gate" and deployment in azure.deployments
    args = ("registry", "deployments", "orders-bot", "--spec", str(spec), "--prune", "--keep-deployments")
    assert _tuneops(monkeypatch, *args) == 0 and deployment in azure.deployments
    assert _tuneops(monkeypatch, "registry", "deployments", "orders-bot", "--spec", str(spec), "--prune") == 0
    assert azure.deployments == {}
    # Microsoft's published spec, checked on every request: not one field the spec does not declare
    assert [str(v) for v in azure.violations] == []
    assert [str(v) for v in azure.response_violations] == []
