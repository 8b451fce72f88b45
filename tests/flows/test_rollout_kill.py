"""A hard kill: the ``rollout`` flow in a child process, SIGKILLed mid-step, then run again.

The first run is a real process talking to the harness's Prefect server; traffic (simulated
request-log rows, as in ``test_rollout.py``) stops once it entered the 25% step, so it is stuck
there, waiting, when it is killed. The re-run must resume that step (never re-enter 5% or 25%)
and promote exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.flows import test_rollout as simulated
from tests.flows.test_rollout import MODEL, Traffic
from tuneops.append_only import utcnow
from tuneops.registry.conventions import CHAMPION
from tuneops.registry.ledger import Ledger
from tuneops.tasks.rollout.state import RolloutStore

pytestmark = pytest.mark.slow
project = simulated.project  # the fixture: claims-bot v1 champion, v2 challenger, a canary spec


def wait_for(condition, what: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the rollout process exited ({process.returncode}) before {what}"
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_rollout_resumes_its_step_and_promotes_once(
    prefect_harness: None,
    project: tuple[Path, str],
    tmp_path: Path,
) -> None:
    from prefect.settings import get_current_settings

    from tuneops.flows.rollout import rollout

    spec, state = project
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}
    code = f"from tuneops.flows.rollout import rollout; rollout(spec_path={str(spec)!r})"
    log = (tmp_path / "first-run.log").open("wb")
    store = RolloutStore.open(state)

    def current():  # type: ignore[no-untyped-def]
        return store.active(MODEL)

    def waiting_in_25_percent() -> bool:
        record = current()
        if record is None or record.step_index != 1:
            return False
        return any(s.step_index == 1 and s.action == "wait" for s in store.steps(record.id))

    process = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with Traffic(state, challenger_error_rate=0.0):
            wait_for(lambda: (r := current()) is not None and r.step_index == 1, "the 25% step", process)
        wait_for(waiting_in_25_percent, "a look in the 25% step", process)  # no traffic: it waits there
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert process.returncode == -signal.SIGKILL
    killed, killed_at = current(), utcnow()
    assert killed is not None and killed.step_index == 1 and killed.status == "running"

    with Traffic(state, challenger_error_rate=0.0):
        outcome = rollout(spec_path=str(spec))
    assert outcome.resumed and outcome.rollout_id == killed.id and outcome.status == "promoted"
    steps = store.steps(killed.id)
    store.close()
    assert [s.weight for s in steps if s.action == "enter"] == [2500, 5000, 10000]  # 25% entered once
    first_look_after = next(s for s in steps if s.verdict and s.at > killed_at)
    assert first_look_after.step_index == 1  # the re-run began where the killed one was
    ledger = Ledger.open(state)
    promotions = [e for e in ledger.history(MODEL, CHAMPION) if e.to_version == "2"]
    ledger.close()
    assert len(promotions) == 1 and promotions[0].actor == "rollout"
    again = rollout(spec_path=str(spec))  # a third run finds it finished: nothing moves twice
    assert again.status == "promoted" and again.rollout_id == killed.id
    ledger = Ledger.open(state)
    assert len([e for e in ledger.history(MODEL, CHAMPION) if e.to_version == "2"]) == 1
    ledger.close()
