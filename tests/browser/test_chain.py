"""The whole at-scale loop on a ``tuneops up`` stack, driven as a team would drive it.

``tuneops up`` (the package's stack fixture) → ``eval "$(tuneops status --env)"`` → ``tuneops run``
registers version 1 as challenger on the stack's servers → ``tuneops rollout start`` pauses for
approval on the stack's Prefect server; in Chromium the Prefect UI shows the approval form, the
test fills and submits it, and the rollout promotes (``tuneops rollout status``, ``tuneops
ledger``) → the gateway serves version 1 → new data, ``tuneops run`` registers version 2 → in the
MLflow UI, ``champion`` is added to version 2 by clicking → the gateway serves version 2 within
5 s (asked with the official openai SDK) and the ledger holds the move the gateway observed → a
killed gateway is reported by ``tuneops status`` and started again by ``tuneops up`` → ``tuneops
down`` (the fixture's teardown, checked to stop every service).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser.conftest import (
    MODEL,
    Stack,
    client_environment,
    recorded_pids,
    tuneops,
    tuneops_in_background,
    write_training_data,
)
from tuneops.registry.conventions import OBSERVED_ACTOR
from tuneops.serving.local.testing import claims_chat_examples
from tuneops.stack import SERVICES

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
REASON = "format checks look right; approved in the browser"
PROMOTION_DEADLINE_S = 5.0


def served_version(gateway_url: str) -> str | None:
    """The version the gateway answered a chat completion with (None: it did not answer)."""
    with openai.OpenAI(base_url=gateway_url, api_key="unused", max_retries=0, timeout=30) as client:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": "Is hail damage covered?"}], max_tokens=4
            )
        except openai.APIError:
            return None
    return raw.headers.get("x-tuneops-model-version")


def wait_for(condition: Callable[[], bool], timeout: float, what: str, since: float | None = None) -> float:
    """Seconds from ``since`` (default: now) until ``condition()`` held; fails after ``timeout``."""
    start = time.monotonic() if since is None else since
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - start


def ok(result: Any) -> str:
    """A finished command's stdout, after checking it succeeded without a traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    return str(result.stdout)


def ledger(stack: Stack, env: Mapping[str, str]) -> list[dict[str, Any]]:
    return list(json.loads(ok(tuneops(stack.project, "ledger", MODEL, "--json", env=env))))


def test_up_run_rollout_ui_promotions_traffic_and_a_killed_service(stack: Stack, page: Any) -> None:
    up_again_is_a_no_op(stack)
    env = client_environment(stack.project)
    assert env["TUNEOPS_TRACKING_URI"] == stack.mlflow_url and env["PREFECT_API_URL"] == stack.prefect_api_url

    run = ok(tuneops(stack.project, "run", "--no-progress", env=env))
    assert f"{MODEL} version 1 (registered now)" in run and "challenger → version 1" in run

    approve_a_rollout_in_the_prefect_ui(stack, env, page, version="1")
    wait_for(lambda: served_version(stack.gateway_url) == "1", 30, "the gateway serving version 1")

    write_training_data(stack.project, claims_chat_examples(70, seed=23))  # new data: a new version
    run = ok(tuneops(stack.project, "run", "--no-progress", env=env))
    assert f"{MODEL} version 2 (registered now)" in run and "challenger → version 2" in run
    assert served_version(stack.gateway_url) == "1"  # a challenger takes no traffic without a rollout

    saved = add_alias_in_the_mlflow_ui(page, stack.mlflow_url, version="2", alias="champion", held_by="1")
    took = wait_for(lambda: served_version(stack.gateway_url) == "2", 30, "the gateway serving v2", saved)
    print(f"the gateway served version 2 {took:.1f} s after 'Save aliases' was clicked in the MLflow UI")
    assert took <= PROMOTION_DEADLINE_S
    observed = ("champion", "1", "2", OBSERVED_ACTOR, "gateway")  # the UI's move, seen by the gateway
    fields = ("alias", "from_version", "to_version", "actor", "source")
    deadline = time.monotonic() + 15
    while observed not in (moves := [tuple(e[k] for k in fields) for e in ledger(stack, env)]):
        assert time.monotonic() < deadline, f"the ledger never held {observed}: {moves}"
        time.sleep(0.5)

    a_killed_service_is_reported_and_restarted(stack, "gateway")
    assert served_version(stack.gateway_url) == "2"  # the restarted gateway reads the registry again


def up_again_is_a_no_op(stack: Stack) -> None:
    """Every service runs and logs under ``.tuneops/logs``; a second ``up`` changes nothing."""
    status = ok(tuneops(stack.project, "status"))
    assert status.count(" running ") == len(SERVICES), status
    for name in SERVICES:
        assert (stack.project / ".tuneops" / "logs" / f"{name}.log").is_file()
    before = recorded_pids(stack.project)
    again = ok(tuneops(stack.project, "up", "--detach"))
    assert "already running" in again
    assert recorded_pids(stack.project) == before


def approve_a_rollout_in_the_prefect_ui(
    stack: Stack, env: Mapping[str, str], page: Any, version: str
) -> None:
    """``tuneops rollout start`` pauses for approval; the Prefect UI's form resumes it; it promotes."""
    rollout = tuneops_in_background(stack.project, "rollout", "start", MODEL, env=env)
    try:
        run_id = paused_flow_run(stack, rollout)
        waiting = ok(tuneops(stack.project, "rollout", "status", MODEL, env=env))
        assert "awaiting-approval" in waiting, waiting

        page.goto(f"{stack.prefect_url}/runs/flow-run/{run_id}")
        page.get_by_role("button", name="Resume").click()
        form = page.get_by_role("dialog")
        form.get_by_text(f"Approve promoting {MODEL} v{version} to champion?").wait_for()
        form.locator("input[type=checkbox]").locator("xpath=..").click()  # the "Approve" toggle
        form.locator("textarea").fill(REASON)
        form.get_by_role("button", name="Submit").click()
        output, _ = rollout.communicate(timeout=180)
    finally:
        if rollout.poll() is None:
            rollout.kill()
            rollout.communicate()
    assert rollout.returncode == 0, output[-4000:]
    assert re.search(r"rollout \d+: promoted", output), output[-4000:]
    run = httpx.get(f"{stack.prefect_api_url}/flow_runs/{run_id}", timeout=10).json()
    assert run["state_type"] == "COMPLETED"

    report = ok(tuneops(stack.project, "rollout", "status", MODEL, env=env))
    assert "status **promoted**" in report and f"approved: {REASON}" in report, report
    champion = [(e["to_version"], e["actor"]) for e in ledger(stack, env) if e["alias"] == "champion"]
    assert champion[-1] == (version, "rollout")


def paused_flow_run(stack: Stack, rollout: Any, timeout: float = 120) -> str:
    """The id of the ``rollout`` flow run paused on the stack's Prefect server."""
    query = {
        "flow_runs": {"state": {"name": {"any_": ["Paused"]}}},
        "flows": {"name": {"any_": ["rollout"]}},
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert rollout.poll() is None, rollout.communicate()[0][-4000:]
        runs = httpx.post(f"{stack.prefect_api_url}/flow_runs/filter", json=query, timeout=10).json()
        if runs:
            return str(runs[0]["id"])
        time.sleep(0.5)
    pytest.fail("the rollout never paused for approval")


def add_alias_in_the_mlflow_ui(
    page: Any, mlflow_url: str, *, version: str, alias: str, held_by: str
) -> float:
    """Registered models → the model → version N → the button beside Aliases → type → Save.

    Returns when "Save aliases" was clicked (``time.monotonic()``), once the dialog has closed.
    """
    page.goto(f"{mlflow_url}/#/models")
    page.get_by_role("link", name=MODEL, exact=True).wait_for()
    # MLflow shows a one-time "new model registry UI" notice over the list: dismiss it like a person
    promo = page.get_by_role("button", name="Try it now")
    with contextlib.suppress(PlaywrightTimeout):
        promo.wait_for(timeout=10_000)
        promo.click()
    page.get_by_role("link", name=MODEL, exact=True).click()
    page.get_by_role("link", name=f"Version {version}", exact=True).click()
    page.get_by_role("heading", name=f"Version {version}").wait_for()
    beside = page.get_by_test_id("descriptions-item").filter(has=page.get_by_text("Aliases", exact=True))
    beside.get_by_role("button", name=re.compile(r"^(Add|Edit) aliases$")).click()  # pencil once it has one
    dialog = page.get_by_role("dialog", name=f"Add/Edit alias for model version {version}")
    field = dialog.get_by_role("combobox")
    field.click()
    field.press_sequentially(alias)
    field.press("Enter")
    dialog.get_by_text(f'The "{alias}" alias is also being used on version {held_by}').wait_for()
    clicked = time.monotonic()
    dialog.get_by_role("button", name="Save aliases").click()
    dialog.wait_for(state="hidden")
    return clicked


def a_killed_service_is_reported_and_restarted(stack: Stack, name: str) -> None:
    """SIGKILL one service: ``status`` says it stopped (exit 1); ``up`` starts only it again."""
    before = recorded_pids(stack.project)
    os.killpg(before[name], signal.SIGKILL)
    crashed = tuneops(stack.project, "status")
    assert crashed.returncode == 1
    [line] = [line for line in crashed.stdout.splitlines() if line.strip().startswith(name)]
    assert "stopped" in line

    restarted = tuneops(stack.project, "up", "--detach")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert f"{name}: stopped, restarting" in restarted.stderr
    after = recorded_pids(stack.project)
    assert after[name] != before[name]
    assert {k: v for k, v in after.items() if k != name} == {k: v for k, v in before.items() if k != name}
    ok(tuneops(stack.project, "status"))
