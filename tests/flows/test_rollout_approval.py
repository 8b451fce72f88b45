"""Approval: the ``rollout`` flow pauses before the final promotion until a human answers.

The flow runs in a thread (with the test's Prefect context, so it talks to the harness server)
while the test answers it the ways a user can: ``tuneops rollout approve|reject NAME --reason``
(the real CLI entry point, in process) or Prefect's API with the input the UI form sends
(``resume_flow_run(flow_run_id, run_input={...})``). Traffic is the simulated request log of
``test_rollout.py``: these tests are about the pause, not the gateway.
"""

from __future__ import annotations

import contextvars
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.flows import test_rollout as simulated
from tests.flows.test_rollout import MODEL, Traffic, _settings
from tuneops.registry.conventions import CHAMPION
from tuneops.registry.ledger import Ledger
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.routing_state import RoutingState
from tuneops.tasks.rollout.state import RolloutRecord, RolloutStore

pytestmark = pytest.mark.slow
project = simulated.project  # the fixture: claims-bot v1 champion, v2 challenger, a canary spec
APPROVAL = "  approval: required\n  approval_timeout_seconds: {timeout}\n"


class FlowThread:
    """The rollout flow in a background thread that carries the caller's context (Prefect settings)."""

    def __init__(self, **parameters: Any) -> None:
        from tuneops.flows.rollout import rollout

        self.outcome: Any = None
        self.error: BaseException | None = None
        context = contextvars.copy_context()

        def run() -> None:
            try:
                self.outcome = context.run(rollout, **parameters)
            except BaseException as exc:  # reported by join()
                self.error = exc

        self.thread = threading.Thread(target=run, name="rollout-flow", daemon=True)
        self.thread.start()

    def join(self, timeout: float = 120) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the rollout flow did not finish"
        if self.error is not None:
            raise self.error
        return self.outcome


def paused_rollout(state: str, flow: FlowThread, timeout: float = 120) -> RolloutRecord:
    """Wait until the rollout is awaiting approval *and* its flow run is paused in Prefect."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert flow.thread.is_alive(), f"the flow ended before pausing: {flow.error or flow.outcome}"
        store = RolloutStore.open(state)
        record = store.active(MODEL)
        store.close()
        if record is not None and record.status == "awaiting-approval" and record.flow_run_id:
            with get_client(sync_client=True) as client:
                run = client.read_flow_run(record.flow_run_id)  # type: ignore[arg-type]
            if run.state is not None and run.state.is_paused():
                return record
        time.sleep(0.2)
    raise AssertionError("the rollout never paused for approval")


def cli(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    code, out, err = run_cli(args, capsys, monkeypatch)
    return code, out + err


def approval_project(paths: tuple[Path, str], timeout: float = 120) -> tuple[Path, str]:
    spec, state = paths
    spec.write_text(spec.read_text() + APPROVAL.format(timeout=timeout))
    return spec, state


def champion(spec: Path) -> str:
    return RegistryStore.from_settings(_settings(spec)).aliases(MODEL)[CHAMPION]


def test_paused_until_approved_from_the_cli(
    prefect_harness: None, project: tuple[Path, str], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    spec, state = approval_project(project)
    with Traffic(state, challenger_error_rate=0.0):
        flow = FlowThread(spec_path=str(spec))
        record = paused_rollout(state, flow)
        assert champion(spec) == "1"  # nothing promoted while waiting
        code, out = cli(["rollout", "status", MODEL, "--spec", str(spec)], capsys, monkeypatch)
        assert code == 0 and "awaiting-approval" in out
        code, out = cli(["rollout", "approve", MODEL, "--spec", str(spec), "--reason", "dashboards fine"],
                        capsys, monkeypatch)  # fmt: skip
        assert code == 0, out
        assert record.flow_run_id in out
        outcome = flow.join()
    assert outcome.status == "promoted" and champion(spec) == "2"
    rs = RolloutStore.open(state)
    approved = [s for s in rs.steps(outcome.rollout_id) if s.action == "approved"]
    rs.close()
    assert [s.summary for s in approved] == ["approved: dashboards fine"]
    ledger = Ledger.open(state)
    assert any(e.actor == "rollout" and e.to_version == "2" for e in ledger.history(MODEL, CHAMPION))
    ledger.close()


def test_the_ui_forms_input_through_prefects_api_is_accepted(
    prefect_harness: None,
    project: tuple[Path, str],
) -> None:
    from prefect.flow_runs import resume_flow_run

    spec, state = approval_project(project)
    with Traffic(state, challenger_error_rate=0.0):
        flow = FlowThread(spec_path=str(spec))
        record = paused_rollout(state, flow)
        resume_flow_run(record.flow_run_id, run_input={"approve": True, "reason": "ok in the UI"})  # type: ignore[arg-type]
        outcome = flow.join()
    assert outcome.status == "promoted" and champion(spec) == "2"


def test_rejection_from_the_cli_rolls_back(
    prefect_harness: None, project: tuple[Path, str], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    spec, state = approval_project(project)
    with Traffic(state, challenger_error_rate=0.0):
        flow = FlowThread(spec_path=str(spec))
        paused_rollout(state, flow)
        code, out = cli(["rollout", "reject", MODEL, "--spec", str(spec), "--reason", "legal says no"],
                        capsys, monkeypatch)  # fmt: skip
        assert code == 0, out
        outcome = flow.join()
    assert outcome.status == "rolled-back" and outcome.reason == "rejected: legal says no"
    assert champion(spec) == "1"
    assert RoutingState.open(state).get(MODEL).weight == 0


def test_no_answer_before_the_timeout_aborts(prefect_harness: None, project: tuple[Path, str]) -> None:
    spec, state = approval_project(project, timeout=2)
    with Traffic(state, challenger_error_rate=0.0):
        outcome = FlowThread(spec_path=str(spec)).join()
    assert outcome.status == "aborted" and outcome.reason.startswith("approval not given within 2s")
    assert champion(spec) == "1"
    assert RoutingState.open(state).get(MODEL).weight == 0
