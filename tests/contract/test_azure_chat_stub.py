"""The Azure stub's chat inference, which evaluation and registered models call on deployments.

NOT SPEC-VALIDATED ON MICROSOFT'S SIDE: the Microsoft specifications vendored in
``tuneops/testing/reference/azure`` cover fine-tuning authoring and the deployments resource, not
chat inference, so the stub cannot check these requests the oav way and adds nothing to
``violations`` for them. What is checked here: the answers have OpenAI's
``CreateChatCompletionResponse`` shape (OpenAI's published OpenAPI description, which Azure's v1
surface speaks; vendored in ``tuneops/testing/reference/openai``), reached with the official SDK
clients the way tuneops reaches them, and Azure's documented behaviour around them (``model`` is
a deployment; an unknown or not yet provisioned one is 404 ``DeploymentNotFound``; ``api-key``
header or bearer).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tuneops.testing.azure_stub import AzureOpenAIStubServer, ServedModel
from tuneops.testing.chat_stub import Messages
from tuneops.testing.reference.openapi import assert_matches

KEY, BASE = "azure-chat-key-1", "gpt-4o-mini-2024-07-18"
DEPLOYMENTS = "/subscriptions/s/resourceGroups/g/providers/Microsoft.CognitiveServices/accounts/a/deployments"
FINE_TUNE = f"{BASE}.ft-0001-orders"
CHAT = [{"role": "user", "content": "Where is order 7?"}]


def scripted(served: ServedModel, messages: Messages) -> str:
    kind = "fine-tune" if served.fine_tuned else "base"
    return f"{kind} {served.model} (base {served.base_model}) behind {served.deployment}"


@pytest.fixture
def azure() -> Iterator[AzureOpenAIStubServer]:
    with AzureOpenAIStubServer(KEY, chat_answer=scripted) as stub:
        base = {"properties": {"model": {"format": "OpenAI", "name": BASE, "version": "1"}}}
        stub.add_deployment(f"{DEPLOYMENTS}/base-dep", "base-dep", base)
        # a succeeded fine-tune of BASE, deployed (as the adapter's deploy leaves it)
        stub.state.jobs["ftjob-0001"] = {
            "id": "ftjob-0001",
            "model": BASE,
            "status": "succeeded",
            "fine_tuned_model": FINE_TUNE,
        }
        tuned = {"properties": {"model": {"format": "OpenAI", "name": FINE_TUNE, "version": "1"}}}
        stub.add_deployment(f"{DEPLOYMENTS}/tuned-dep", "tuned-dep", tuned)
        stub.add_deployment(f"{DEPLOYMENTS}/still-creating", "still-creating", tuned, state="Creating")
        yield stub


def test_v1_chat_completions_answer_per_deployment_in_openais_shape(azure, schemas) -> None:
    client = openai.OpenAI(base_url=f"{azure.endpoint}/openai/v1", api_key=KEY, max_retries=0)
    with client:
        raw = client.chat.completions.with_raw_response.create(model="tuned-dep", messages=CHAT)  # type: ignore[arg-type]
        assert_matches("CreateChatCompletionResponse", json.loads(raw.http_response.text))
        assert (
            raw.parse().choices[0].message.content == f"fine-tune {FINE_TUNE} (base {BASE}) behind tuned-dep"
        )
        base = client.chat.completions.create(model="base-dep", messages=CHAT)  # type: ignore[arg-type]
        assert base.choices[0].message.content == f"base {BASE} (base {BASE}) behind base-dep"
        assert base.model == BASE  # Azure reports the model behind the deployment
    assert azure.chat_requests == [("tuned-dep", 200), ("base-dep", 200)]
    assert azure.violations == [] and azure.api_versions == set()  # not validated; no api-version needed


def test_the_api_key_header_works_too_and_a_wrong_key_is_refused(azure, schemas) -> None:
    url = f"{azure.endpoint}/openai/v1/chat/completions"
    with httpx.Client() as http:
        ok = http.post(url, json={"model": "base-dep", "messages": CHAT}, headers={"api-key": KEY})
        wrong = http.post(url, json={"model": "base-dep", "messages": CHAT}, headers={"api-key": "nope"})
        missing = http.post(url, json={"model": "base-dep"}, headers={"api-key": KEY})
    assert ok.status_code == 200
    assert_matches("CreateChatCompletionResponse", ok.json())
    assert wrong.status_code == 401 and missing.status_code == 400
    assert azure.chat_requests == [("base-dep", 200)]


@pytest.mark.parametrize("deployment", ["no-such-deployment", BASE, "still-creating"])
def test_a_deployment_the_account_does_not_serve_is_deployment_not_found(azure, deployment) -> None:
    # a model name is not a deployment (BASE is deployed as base-dep), nor is one still Creating
    client = openai.OpenAI(base_url=f"{azure.endpoint}/openai/v1", api_key=KEY, max_retries=0)
    with client, pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model=deployment, messages=CHAT)  # type: ignore[arg-type]
    assert missing.value.code == "DeploymentNotFound"
    assert azure.chat_requests == [(deployment, 404)]


def test_the_classic_deployments_route_answers_the_azure_client(azure, schemas) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=azure.endpoint, api_key=KEY, api_version="2025-04-01-preview", max_retries=0
    )
    with client:
        raw = client.chat.completions.with_raw_response.create(model="tuned-dep", messages=CHAT)  # type: ignore[arg-type]
    assert_matches("CreateChatCompletionResponse", json.loads(raw.http_response.text))
    assert raw.parse().choices[0].message.content.startswith("fine-tune ")
    assert ("POST", "/deployments/tuned-dep/chat/completions") in azure.state.requests
    assert azure.violations == [] and azure.api_versions == {"2025-04-01-preview"}
