"""Picking the adapter from the spec and the credentials from settings, never from the spec."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from tuneops.errors import ProviderAuthError
from tuneops.settings import TuneopsSettings
from tuneops.spec import AzureOpenAIProviderConfig, LocalProviderConfig, OpenAIProviderConfig
from tuneops.tasks.finetune.azure_openai import AzureOpenAIProvider
from tuneops.tasks.finetune.openai_compatible import OpenAICompatibleProvider
from tuneops.tasks.finetune.provider import LOCAL_PLACEHOLDER_KEY, FineTuneProvider, provider_for


@pytest.fixture
def bare(tmp_path) -> TuneopsSettings:
    return TuneopsSettings(project_dir=tmp_path)


def test_local_needs_no_key_and_uses_its_base_url(bare) -> None:
    adapter = provider_for(LocalProviderConfig(base_url="http://127.0.0.1:9/v1"), bare)
    assert isinstance(adapter, OpenAICompatibleProvider) and isinstance(adapter, FineTuneProvider)
    assert adapter.kind == "local" and adapter.client.api_key == LOCAL_PLACEHOLDER_KEY
    assert str(adapter.client.base_url).startswith("http://127.0.0.1:9/v1")
    assert adapter.client.max_retries == 0  # the SDK must never replay a create
    adapter.close()


def test_local_uses_the_configured_local_key(tmp_path) -> None:
    settings = TuneopsSettings(project_dir=tmp_path, local_api_key=SecretStr("local-secret"))
    adapter = provider_for(LocalProviderConfig(), settings)
    assert adapter.client.api_key == "local-secret"
    adapter.close()


def test_openai_without_a_key_says_where_to_put_it(bare) -> None:
    with pytest.raises(ProviderAuthError) as caught:
        provider_for(OpenAIProviderConfig(kind="openai"), bare)
    assert "OPENAI_API_KEY" in caught.value.one_line()


def test_openai_with_a_key(tmp_path) -> None:
    settings = TuneopsSettings(project_dir=tmp_path, openai_api_key=SecretStr("sk-x"))
    adapter = provider_for(OpenAIProviderConfig(kind="openai", organization="org-1"), settings)
    assert adapter.kind == "openai" and adapter.client.organization == "org-1"
    adapter.close()


def test_azure_without_a_key_says_where_to_put_it(bare) -> None:
    config = AzureOpenAIProviderConfig(kind="azure-openai", endpoint="https://x.openai.azure.com")
    with pytest.raises(ProviderAuthError) as caught:
        provider_for(config, bare)
    assert "AZURE_OPENAI_API_KEY" in caught.value.one_line()


def test_azure_gets_the_api_version_and_an_injected_credential(tmp_path) -> None:
    settings = TuneopsSettings(project_dir=tmp_path, azure_openai_api_key=SecretStr("az"))
    config = AzureOpenAIProviderConfig(kind="azure-openai", endpoint="https://x.openai.azure.com")
    credential = object()
    adapter = provider_for(config, settings, credential=credential)
    assert isinstance(adapter, AzureOpenAIProvider)
    assert adapter.client.max_retries == 0 and adapter.client._api_version == config.api_version
    assert adapter._credential is credential
    adapter.close()
