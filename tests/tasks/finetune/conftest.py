"""Fixtures of the fine-tune tests: the OpenAI protocol stub, a spec pointing at it, a dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tuneops.tasks.data.types import DatasetVersion
from tuneops.tasks.finetune.openai_compatible import OpenAICompatibleProvider

from tuneops.spec import Spec
from tuneops.testing.openai_stub import OpenAIStubServer, chat_dataset_version

FAKE_KEY = "sk-tuneops-test-3f9a7c1e5d"


@pytest.fixture
def stub() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer(api_key=FAKE_KEY, steps=3) as server:
        yield server


@pytest.fixture
def dataset(tmp_path: Path) -> DatasetVersion:
    return chat_dataset_version(tmp_path / "dataset")


@pytest.fixture
def make_spec(stub: OpenAIStubServer, tmp_path: Path) -> Callable[..., Spec]:
    def make(**finetune: Any) -> Spec:
        return Spec.model_validate(
            {
                "model": {"name": "support-bot", "base_model": "gpt-4o-mini-2024-07-18"},
                "provider": {"kind": "openai", "base_url": stub.base_url},
                "data": {"train": str(tmp_path / "train.jsonl")},
                "finetune": {"suffix": "support", "hyperparameters": {"n_epochs": 2}, **finetune},
            }
        )

    return make


@pytest.fixture
def provider(stub: OpenAIStubServer) -> Iterator[OpenAICompatibleProvider]:
    adapter = OpenAICompatibleProvider(kind="openai", base_url=stub.base_url, api_key=FAKE_KEY, timeout=2.0)
    yield adapter
    adapter.close()
