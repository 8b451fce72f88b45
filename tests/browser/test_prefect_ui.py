"""The Prefect UI of a ``tuneops up`` stack, read and clicked in Chromium.

- The project's deployments (registered by ``tuneops up`` through ``tuneops deploy``) show their
  cron schedule, and the retrain deployment's trigger shows the drift event for exactly this model.
- A flow paused for approval shows the approval form, and submitting it in the browser resumes
  the run with the answer. The paused flow here is a small probe flow that pauses with the
  rollout flow's own ``Approval`` input (not a whole rollout: that needs live traffic).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import MODEL, Stack

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PROBE = """
from prefect import flow
from prefect.flow_runs import pause_flow_run

from tuneops.flows.rollout import Approval


@flow(name="approval-probe")
def approval_probe() -> str:
    answer = pause_flow_run(
        wait_for_input=Approval.with_initial_data(description="Approve promoting claims-triage v2?"),
        timeout=600, poll_interval=1,
    )
    return f"approve={answer.approve} reason={answer.reason}"


print("RESULT", approval_probe())
"""


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


def paused_run(stack: Stack, probe: subprocess.Popen[str], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    query = {
        "flow_runs": {"state": {"name": {"any_": ["Paused"]}}},
        "flows": {"name": {"any_": ["approval-probe"]}},
    }
    while time.monotonic() < deadline:
        assert probe.poll() is None, probe.communicate()[0][-3000:]
        runs = httpx.post(f"{stack.prefect_api_url}/flow_runs/filter", json=query, timeout=10).json()
        if runs:
            return str(runs[0]["id"])
        time.sleep(0.5)
    pytest.fail("the probe flow never paused")


def test_a_paused_approval_is_answered_in_the_prefect_ui(stack: Stack, page: Any, tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {"PREFECT_API_URL": stack.prefect_api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    probe = subprocess.Popen(
        [sys.executable, str(script)], env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        run_id = paused_run(stack, probe)
        page.goto(f"{stack.prefect_url}/runs/flow-run/{run_id}")
        page.get_by_role("button", name="Resume").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Approve promoting claims-triage v2?").wait_for()
        dialog.locator("input[type=checkbox]").locator("xpath=..").click()  # the "Approve" toggle
        dialog.locator("textarea").fill("looks good in the browser")
        dialog.get_by_role("button", name="Submit").click()
        output, _ = probe.communicate(timeout=120)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
    assert probe.returncode == 0, output[-3000:]
    assert "RESULT approve=True reason=looks good in the browser" in output
