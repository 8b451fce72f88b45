"""``tuneops status`` / ``tuneops up`` on the session's running stack: a second ``up`` changes
nothing, a killed service is reported by ``status`` and started again by ``up``, every service
logs under ``.tuneops/logs``. (``tuneops down`` is the stack fixture's teardown.)"""

from __future__ import annotations

import json
import os
import signal

import httpx
import pytest

from tests.browser.conftest import Stack, tuneops

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
SERVICES = {"s3", "mlflow", "prefect", "models", "worker", "gateway"}


def pids(stack: Stack) -> dict[str, int]:
    state = json.loads((stack.project / ".tuneops" / "stack.json").read_text())
    return {name: record["pid"] for name, record in state["services"].items()}


def test_status_up_again_and_a_killed_service(stack: Stack) -> None:
    status = tuneops(stack.project, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count(" running ") == len(SERVICES)
    for name in SERVICES:
        assert (stack.project / ".tuneops" / "logs" / f"{name}.log").is_file()

    before = pids(stack)
    again = tuneops(stack.project, "up", "--detach")
    assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
    assert pids(stack) == before

    os.killpg(before["gateway"], signal.SIGKILL)
    crashed = tuneops(stack.project, "status")
    assert crashed.returncode == 1
    [line] = [line for line in crashed.stdout.splitlines() if line.strip().startswith("gateway")]
    assert "stopped" in line

    restarted = tuneops(stack.project, "up", "--detach")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "gateway: stopped, restarting" in restarted.stderr
    after = pids(stack)
    assert after["gateway"] != before["gateway"]
    assert {k: v for k, v in after.items() if k != "gateway"} == {
        k: v for k, v in before.items() if k != "gateway"
    }
    assert tuneops(stack.project, "status").returncode == 0
    assert httpx.get(stack.gateway_url.removesuffix("/v1") + "/health", timeout=10).status_code == 200
