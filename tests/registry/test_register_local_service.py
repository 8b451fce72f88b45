"""The registered model against tuneops' real local OpenAI-compatible service (no stub in between)."""

from __future__ import annotations

from typing import Any

import mlflow
import pytest

from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.register import register_model
from tuneops.registry.types import RegistrationRequest
from tuneops.serving.local.testing import local_service, tiny_test_model  # noqa: F401
from tuneops.serving.local.tinymodel import TINY_MODEL_ID


@pytest.mark.slow
def test_champion_answers_through_the_local_service(
    local_service: Any,  # noqa: F811
    store: RegistryStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_env = None
    if local_service.api_key:
        monkeypatch.setenv("TUNEOPS_TEST_LOCAL_KEY", local_service.api_key)
        key_env = "TUNEOPS_TEST_LOCAL_KEY"
    request = RegistrationRequest(
        model_name="local-bot", provider="local", base_model=TINY_MODEL_ID,
        endpoint_base_url=local_service.base_url, endpoint_model=TINY_MODEL_ID, job_id="no-training-needed",
        api_key_env=key_env, gate_passed=True,
    )  # fmt: skip
    version = register_model(request, store)
    store.set_alias("local-bot", "champion", version.version)
    with store.fluent():
        model = mlflow.pyfunc.load_model("models:/local-bot@champion")
    answers = model.predict(
        [[{"role": "user", "content": "my windshield has a long crack"}]], params={"max_tokens": 8}
    )
    assert len(answers) == 1 and isinstance(answers[0], str)
