"""Test helpers for anyone who needs a real local OpenAI-compatible service (pytest fixtures included).

In a test folder's ``conftest.py``::

    from tuneops.serving.local.testing import local_service, tiny_test_model  # noqa: F401

then a test takes ``local_service`` (a running ``ServiceProcess``; ``.base_url``, ``.api_key``)
and talks to it with ``openai.OpenAI(base_url=svc.base_url, api_key=svc.api_key or "none")``.
The tiny test base model (``tuneops-tiny``, ``test`` profile: seconds to build) is built once per
test session and shared read-only by every service.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuneops.serving.local.launcher import ServiceProcess, start_service
from tuneops.serving.local.tinymodel import TINY_MODEL_ID, ensure_tiny_model


def build_test_base_model(directory: Path) -> Path:
    """Build (once) the test-profile ``tuneops-tiny`` under ``directory``; returns its folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ensure_tiny_model(Path(directory) / TINY_MODEL_ID, "test")
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def serve_locally(home: Path, base_model_dir: Path | None = None, *, api_key: str | None = None,
                  startup_timeout: float = 120) -> Iterator[ServiceProcess]:
    """A service on a free port with ``home`` as its models dir, stopped when the block ends."""
    service = start_service(home, api_key=api_key, tiny_profile="test", startup_timeout=startup_timeout,
                            base_model_dirs=[base_model_dir] if base_model_dir else [])
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def tiny_test_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test-profile ``tuneops-tiny`` folder, built once per session."""
    return build_test_base_model(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture
def local_service(tmp_path: Path, tiny_test_model: Path) -> Iterator[ServiceProcess]:
    """A fresh local service (own home in ``tmp_path``) serving the tiny test model, no API key."""
    with serve_locally(tmp_path / "models", tiny_test_model) as service:
        yield service
