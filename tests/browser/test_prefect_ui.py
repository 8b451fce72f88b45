"""The Prefect UI of a ``tuneops up`` stack, read and clicked in Chromium: the project's
deployments (registered by ``tuneops up`` through ``tuneops deploy``) show their cron schedule,
and the retrain deployment's trigger shows the drift event for exactly this model.

A real rollout paused for approval and answered in this UI is part of the whole loop in
``test_chain.py`` (it needs a trained, registered version first).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import MODEL, Stack

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_deployments_show_their_schedule_and_drift_trigger(stack: Stack, page: Any) -> None:
    page.goto(f"{stack.prefect_url}/deployments")
    page.get_by_role("link", name=f"monitor-drift-{MODEL}").first.wait_for()
    page.get_by_role("link", name=f"retrain-{MODEL}").first.click()
    page.get_by_text("At 03:00 AM, only on Monday").wait_for()  # retrain_cron "0 3 * * 1"
    page.get_by_role("link", name=f"retrain-{MODEL}__automation_1").click()
    page.get_by_text("A custom trigger").wait_for()
    page.goto(f"{page.url}/edit")  # the automation's form, where the trigger's event is spelled out
    page.get_by_text("tuneops.drift.detected", exact=True).wait_for()
    page.get_by_text(f"tuneops.model.{MODEL}", exact=True).wait_for()
