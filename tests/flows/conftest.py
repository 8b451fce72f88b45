"""A small but real project for the ``retrain`` flow: learnable claims data and a local service.

The service is the real local tuning service on the tiny test base model; the data is the
shipped claims stand-in (strict answer format, fully determined by the claim), small enough to
fine-tune in seconds and learnable enough for the fine-tune to beat the base model honestly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tuneops.serving.local.testing import as_jsonl, claims_chat_examples, serve_locally
from tuneops.serving.local.tinymodel import TINY_MODEL_ID, ensure_tiny_model

MODEL_NAME = "claims-bot"


@dataclass(frozen=True)
class RetrainProject:
    """A project folder with ``tuneops.yaml`` pointing at a running local service."""

    directory: Path
    spec_path: Path
    base_url: str


def write_project(directory: Path, base_url: str, *, n_epochs: int = 3) -> RetrainProject:
    """Write data splits and a spec whose gate a real fine-tune of the tiny model can pass."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = claims_chat_examples(150, seed=11)
    (directory / "train.jsonl").write_bytes(as_jsonl(rows[:100]))
    (directory / "validation.jsonl").write_bytes(as_jsonl(rows[100:120]))
    (directory / "test.jsonl").write_bytes(as_jsonl(rows[120:]))
    spec_path = directory / "tuneops.yaml"
    spec_path.write_text(
        f"""
model: {{name: {MODEL_NAME}, base_model: tuneops-tiny}}
provider: {{kind: local, base_url: "{base_url}"}}
data: {{name: claims, train: train.jsonl, validation: validation.jsonl, test: test.jsonl}}
finetune:
  suffix: bot
  seed: 7
  hyperparameters: {{n_epochs: {n_epochs}}}
evaluation:
  metrics: [f1, rouge, format]
  format: {{regex: "^CLAIM_TYPE=\\\\w+; PRIORITY=\\\\w+; NEXT=\\\\w+\\\\.$"}}
  gates:
    - {{metric: f1, min_absolute_change: 0.05}}
  max_tokens: 40
  bootstrap_resamples: 200
"""
    )
    return RetrainProject(directory=directory, spec_path=spec_path, base_url=base_url)


@pytest.fixture(scope="session")
def default_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default-profile ``tuneops-tiny`` (the one users get), built once per session (~1 min).

    The flow tests need a base model that writes language and learns the answer format, so
    that "the fine-tune beats the base" is a real result; the test profile is too weak for that.
    """
    return ensure_tiny_model(tmp_path_factory.mktemp("tiny-default") / TINY_MODEL_ID, "default")


@pytest.fixture
def retrain_project(tmp_path: Path, default_tiny_model: Path) -> Iterator[RetrainProject]:
    with serve_locally(tmp_path / "models", default_tiny_model) as service:
        yield write_project(tmp_path / "project", service.base_url)
