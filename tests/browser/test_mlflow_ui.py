"""Promotion in the MLflow UI, clicked as a person would, moves the gateway's traffic.

Versions 1 and 2 of the model are registered on the stack's MLflow server (served by the local
service's base model); version 1 is champion. In Chromium: the registered models list, the
model, version 2, "Add" beside Aliases, type ``champion``, "Save aliases". Then the stack's
gateway answers with version 2 and the promotion ledger (PostgreSQL) holds the move, observed
by the gateway.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser.conftest import MODEL, Stack
from tuneops.registry.conventions import OBSERVED_ACTOR
from tuneops.registry.ledger import Ledger
from tuneops.registry.mlflow_store import RegistryStore

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
QUESTION = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Is hail damage covered?"}],
    "max_tokens": 4,
}


def served_version(stack: Stack) -> str | None:
    response = httpx.post(f"{stack.gateway_url}/chat/completions", json=QUESTION, timeout=60)
    return response.headers.get("x-tuneops-model-version") if response.status_code == 200 else None


def wait_for(condition: Any, timeout: float) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def two_versions(stack: Stack) -> RegistryStore:
    store = RegistryStore(stack.mlflow_url)
    store.ensure_registered_model(MODEL)
    tags = {"tuneops.provider": "local", "tuneops.endpoint_model": "tuneops-tiny"}
    for expected in ("1", "2"):
        created = store.create_version(MODEL, f"s3://tuneops/models/v{expected}", None, tags, "", None)  # type: ignore[arg-type]
        assert created.version == expected
    store.set_alias(MODEL, "champion", "1")
    wait_for(lambda: served_version(stack) == "1", timeout=60)
    return store


def test_adding_the_champion_alias_in_the_mlflow_ui_moves_traffic_and_is_ledgered(
    stack: Stack, two_versions: RegistryStore, page: Any
) -> None:
    page.goto(f"{stack.mlflow_url}/#/models")
    page.get_by_role("link", name=MODEL, exact=True).wait_for()
    # MLflow shows a one-time "new model registry UI" notice over the list: dismiss it like a person
    promo = page.get_by_role("button", name="Try it now")
    with contextlib.suppress(PlaywrightTimeout):
        promo.wait_for(timeout=10_000)
        promo.click()
    page.get_by_role("link", name=MODEL, exact=True).click()
    page.get_by_role("link", name="Version 2", exact=True).click()
    page.get_by_role("heading", name="Version 2").wait_for()
    page.get_by_role("button", name="Add", exact=True).first.click()  # beside "Aliases"
    dialog = page.get_by_role("dialog", name="Add/Edit alias for model version 2")
    field = dialog.get_by_role("combobox")
    field.click()
    field.press_sequentially("champion")
    field.press("Enter")
    dialog.get_by_text('The "champion" alias is also being used on version 1').wait_for()
    dialog.get_by_role("button", name="Save aliases").click()
    dialog.wait_for(state="hidden")
    assert two_versions.aliases(MODEL)["champion"] == "2"

    took = wait_for(lambda: served_version(stack) == "2", timeout=30)
    print(f"gateway served version 2 {took:.1f} s after the UI saved the alias")

    ledger = Ledger.open(stack.state_url)
    try:
        last = ledger.history(MODEL)[-1]
    finally:
        ledger.close()
    assert (last.alias, last.from_version, last.to_version) == ("champion", "1", "2")
    assert (last.actor, last.source) == (OBSERVED_ACTOR, "gateway")
