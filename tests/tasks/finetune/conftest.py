"""Fixtures of the fine-tune tests: the OpenAI protocol stub, a spec pointing at it, a dataset."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.data.catalog import store_for
from tuneops.tasks.data.types import DatasetVersion
from tuneops.tasks.data.version import version_from_spec
from tuneops.tasks.finetune.openai_compatible import OpenAICompatibleProvider
from tuneops.testing.openai_stub import OpenAIStubServer

FAKE_KEY = "sk-tuneops-test-3f9a7c1e5d"


@pytest.fixture
def stub() -> Iterator[OpenAIStubServer]:
    with OpenAIStubServer(api_key=FAKE_KEY, steps=3) as server:
        yield server


def write_chat_jsonl(path: Path, rows: int = 20) -> Path:
    """A small valid chat fine-tuning file."""
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"What is ticket {i} about?"},
                    {"role": "assistant", "content": f"Ticket {i} is about billing."},
                ]
            }
        )
        for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def dataset(make_spec: Callable[..., Spec], settings: TuneopsSettings) -> DatasetVersion:
    """The spec's data versioned by the data stage into the project's real local store."""
    spec = make_spec()
    write_chat_jsonl(spec.data.train)
    return version_from_spec(spec, store=store_for(settings), home=settings.state_home)


@pytest.fixture
def make_spec(stub: OpenAIStubServer, tmp_path: Path) -> Callable[..., Spec]:
    def make(**finetune: Any) -> Spec:
        return Spec.model_validate(
            {
                "model": {"name": "support-bot", "base_model": "gpt-4o-mini-2024-07-18"},
                "provider": {"kind": "openai", "base_url": stub.base_url},
                "data": {"train": str(tmp_path / "train.jsonl"), "split": {"validation": 0.25, "test": 0.0}},
                "finetune": {"suffix": "support", "hyperparameters": {"n_epochs": 2}, **finetune},
            }
        )

    return make


@pytest.fixture
def provider(stub: OpenAIStubServer) -> Iterator[OpenAICompatibleProvider]:
    adapter = OpenAICompatibleProvider(kind="openai", base_url=stub.base_url, api_key=FAKE_KEY, timeout=2.0)
    yield adapter
    adapter.close()
