"""Fixtures of the evaluation tests: a small Q&A test split, models on the chat stub, NLTK data."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.evaluation.nltk_data import APT_PACKAGES, ensure_nltk_data
from tuneops.testing.chat_stub import ChatStub, Messages, StubConfig, running_chat_stub

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Poland", "Warsaw"), ("Greece", "Athens"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
    ("Ireland", "Dublin"), ("Belgium", "Brussels"), ("Hungary", "Budapest"), ("Czechia", "Prague"),
    ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Croatia", "Zagreb"), ("Serbia", "Belgrade"),
    ("Slovakia", "Bratislava"), ("Slovenia", "Ljubljana"), ("Estonia", "Tallinn"), ("Latvia", "Riga"),
    ("Lithuania", "Vilnius"), ("Iceland", "Reykjavik"), ("Albania", "Tirana"), ("Malta", "Valletta"),
    ("Cyprus", "Nicosia"), ("Ukraine", "Kyiv"),
]  # fmt: skip
SYSTEM = "Answer with the capital city in one sentence."
QUESTIONS = {
    f"What is the capital of {country}?": f"The capital of {country} is {city}." for country, city in CAPITALS
}
ORDER = list(QUESTIONS)
UNSURE = "I am not sure about that one."
STUB_KEY = "sk-stub-secret-0123456789"


def stub_answer(model: str, messages: Messages) -> str:
    """Models of known quality: share of questions each one answers right, and one slow one."""
    question = str(messages[-1]["content"])
    reference = QUESTIONS.get(question, UNSURE)
    row = ORDER.index(question) if question in QUESTIONS else 0
    if model in ("ft-good", "champ-good"):
        return reference
    if model == "ft-slow":
        time.sleep(0.06)
        return reference
    if model == "ft-ok":  # 80% right
        return reference if row % 5 else UNSURE
    if model == "ft-mediocre":  # 50% right
        return reference if row % 2 else UNSURE
    if model == "base-strong":  # 90% right
        return reference if row % 10 else UNSURE
    return UNSURE  # "base": the untuned model


@pytest.fixture(scope="session")
def nltk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NLTK data built once per session from local sources.

    Without WordNet on the machine the tests that need it are skipped locally and fail in CI
    (CI=true), where the apt packages must be installed.
    """
    path = tmp_path_factory.mktemp("nltk_data")
    if "wordnet" not in ensure_nltk_data(path):
        message = f"WordNet 3.0 is not installed: {' '.join(('apt-get install -y', *APT_PACKAGES))}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def test_file(tmp_path: Path) -> Path:
    path = tmp_path / "test.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for question, answer in QUESTIONS.items():
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path


@pytest.fixture
def stub() -> Iterator[ChatStub]:
    with running_chat_stub(StubConfig(answer=stub_answer, api_key=STUB_KEY, models=("base", "ft-good"))) as s:
        yield s


@pytest.fixture
def eval_settings(
    tmp_path: Path, nltk_dir: Path, mlflow_store: Any, monkeypatch: pytest.MonkeyPatch
) -> TuneopsSettings:
    """Settings for a project in tmp_path (fresh MLflow store), sharing the session's NLTK data."""
    project = tmp_path / "project"
    (project / ".tuneops").mkdir(parents=True)
    (project / ".tuneops" / "nltk_data").symlink_to(nltk_dir)
    monkeypatch.setenv("TUNEOPS_LOCAL_API_KEY", STUB_KEY)
    return TuneopsSettings.load(
        project, tracking_uri=mlflow_store.tracking_uri, artifact_root=mlflow_store.artifact_root
    )


def make_spec(base_url: str, **evaluation: object) -> Spec:
    """A spec whose provider is the stub, with the given ``evaluation`` section."""
    return Spec.model_validate(
        {
            "model": {"name": "capitals", "base_model": "base"},
            "provider": {"kind": "local", "base_url": base_url},
            "data": {"train": "train.jsonl"},
            "evaluation": {"metrics": ["f1", "rouge", "format"], "bootstrap_resamples": 200, **evaluation},
        }
    )
