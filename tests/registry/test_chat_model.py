"""The registered model's input shapes and its errors, without MLflow in between."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from tuneops.errors import ProviderAuthError, TransientProviderError, UsageError
from tuneops.registry.chat_model import EndpointChatModel, to_conversations

HELLO = [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("hello", [HELLO]),
        (["hello", "bye"], [HELLO, [{"role": "user", "content": "bye"}]]),
        ([HELLO], [HELLO]),
        (HELLO, [HELLO]),  # one conversation as a flat list of messages
        ({"messages": HELLO}, [HELLO]),
        ([{"messages": HELLO}], [HELLO]),
        (pd.DataFrame({"messages": [HELLO, HELLO]}), [HELLO, HELLO]),
        (pd.DataFrame({"prompt": ["hello"]}), [HELLO]),
        ([], []),
    ],
)
def test_every_documented_shape(given: Any, expected: list[list[dict[str, str]]]) -> None:
    assert to_conversations(given) == expected


@pytest.mark.parametrize(
    "given", [pd.DataFrame({"text": ["x"]}), {"prompt": "x"}, [[{"role": "user"}]], [[1]], 42, [["a", "b"]]]
)
def test_other_shapes_are_usage_errors(given: Any) -> None:
    with pytest.raises(UsageError):
        to_conversations(given)


def loaded(config: dict[str, Any]) -> EndpointChatModel:
    model = EndpointChatModel()
    model.load_context(SimpleNamespace(model_config=config))
    return model


def test_a_missing_key_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNEOPS_TEST_NO_SUCH_KEY", raising=False)
    model = loaded(
        {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "TUNEOPS_TEST_NO_SUCH_KEY"}
    )
    with pytest.raises(ProviderAuthError, match="TUNEOPS_TEST_NO_SUCH_KEY"):
        model.predict(None, ["hi"])


def test_an_unreachable_endpoint_is_transient() -> None:
    model = loaded({"base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout": 2, "max_retries": 0})
    with pytest.raises(TransientProviderError):
        model.predict(None, ["hi"])


def test_params_override_generation_options(chat_stub: Any) -> None:
    model = loaded({"base_url": chat_stub.base_url, "model": "ft:x", "max_tokens": 16})
    assert model.predict(None, "hi", params={"max_tokens": 3, "temperature": 0.5, "ignored": 1}) == [
        "ft:x: hi"
    ]
    sent = chat_stub.requests[-1]
    assert (sent["max_tokens"], sent["temperature"], sent["model"]) == (3, 0.5, "ft:x")


def test_azure_endpoints_use_the_azure_client(chat_stub: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEOPS_TEST_AZURE_KEY", "azure-key-1")
    root = chat_stub.base_url.removesuffix("/v1")
    model = loaded({"base_url": root, "model": "my-deployment", "api_version": "2025-04-01-preview",
                    "api_key_env": "TUNEOPS_TEST_AZURE_KEY"})  # fmt: skip
    assert model.predict(None, "hi") == ["my-deployment: hi"]
    assert (
        chat_stub.paths[-1]
        == "/openai/deployments/my-deployment/chat/completions?api-version=2025-04-01-preview"
    )
    assert chat_stub.auth_headers[-1] == "azure-key-1"
