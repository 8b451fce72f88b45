"""The ``rollout`` flow under the Prefect test harness, against real local MLflow and state DB.

Traffic here is *simulated*: a generator thread writes request-log rows (``RequestLogWriter``
semantics, straight into the log's table) for the arm the routing state gives each sticky user,
because these tests are about the decisions and the durable progress, not the gateway's HTTP
path (tests/serving/gateway/ covers that).
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tuneops.append_only import utcnow
from tuneops.registry.conventions import CHALLENGER, CHAMPION, PREVIOUS
from tuneops.registry.ledger import Ledger
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.requestlog import RequestLog, RequestRecord, insert_records
from tuneops.routing_state import RoutingState
from tuneops.serving.gateway.assignment import bucket_of

MODEL = "claims-bot"


def write_spec(directory: Path, mlflow_store: Any, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.jsonl").write_text("")
    spec = directory / "tuneops.yaml"
    spec.write_text(
        f"""
model: {{name: {MODEL}, base_model: tuneops-tiny}}
data: {{train: train.jsonl}}
rollout:
  strategy: canary
  steps: [5, 25, 50, 100]
  min_requests_per_step: 60
  min_samples_per_arm: 40
  min_step_seconds: 0
  analysis_interval_seconds: 0.3
  max_duration_seconds: 600
{extra}
"""
    )
    return spec


@pytest.fixture
def project(tmp_path: Path, mlflow_store: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    state = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("TUNEOPS_STATE_DB_URL", state)
    monkeypatch.setenv("TUNEOPS_TRACKING_URI", mlflow_store.tracking_uri)
    monkeypatch.setenv("TUNEOPS_ARTIFACT_ROOT", mlflow_store.artifact_root)
    store = RegistryStore(mlflow_store.tracking_uri, mlflow_store.artifact_root)
    store.ensure_registered_model(MODEL)
    for _ in range(2):
        store.create_version(MODEL, "file:///nowhere", "", {"tuneops.gate": "passed"}, "", None)
    ledger = Ledger.open(state)
    from tuneops.registry.promotion import promote

    promote(store, ledger, MODEL, "1", CHAMPION, reason="first champion")
    promote(store, ledger, MODEL, "2", CHALLENGER, reason="gate passed")
    ledger.close()
    yield write_spec(tmp_path / "project", mlflow_store), state


class Traffic:
    """Sticky users sending requests; each lands on the arm the routing state gives its bucket."""

    def __init__(self, state: str, *, challenger_error_rate: float, per_tick: int = 40, tick: float = 0.05):
        self.state, self.rate, self.per_tick, self.tick = state, challenger_error_rate, per_tick, tick
        self.stop = threading.Event()
        self.users = [f"user-{i}" for i in range(400)]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.rng = random.Random(5)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        routing, log = RoutingState.open(self.state), RequestLog.open(self.state)
        while not self.stop.is_set():
            st = routing.get(MODEL)
            records = []
            for _ in range(self.per_tick):
                user = self.rng.choice(self.users)
                on_ch = st.challenger_version == "2" and bucket_of(st.experiment_id, user) < st.weight
                version, arm = ("2", "challenger") if on_ch else ("1", "champion")
                err = on_ch and self.rng.random() < self.rate
                records.append(RequestRecord(
                    request_id=uuid.uuid4().hex, model=MODEL, at=utcnow(), status_code=502 if err else 200,
                    latency_ms=self.rng.uniform(80, 120), version=version, arm=arm, user_key_hash=user,
                    format_ok=None if err else True, refusal=None if err else False,
                ))  # fmt: skip
            with log.engine.begin() as conn:
                insert_records(conn, records)
            self.stop.wait(self.tick)
        routing.close()
        log.close()


@pytest.mark.slow
def test_good_challenger_steps_through_to_champion(prefect_harness: None, project: tuple[Path, str]) -> None:
    from tuneops.flows.rollout import rollout

    spec, state = project
    with Traffic(state, challenger_error_rate=0.0):
        outcome = rollout(spec_path=str(spec))
    assert outcome.status == "promoted"
    store = RegistryStore.from_settings(_settings(spec))
    aliases = store.aliases(MODEL)
    assert aliases[CHAMPION] == "2" and aliases[PREVIOUS] == "1" and CHALLENGER not in aliases
    from tuneops.tasks.rollout.state import RolloutStore

    rs = RolloutStore.open(state)
    entered = [s.weight for s in rs.steps(outcome.rollout_id) if s.action == "enter"]
    rs.close()
    assert entered == [2500, 5000, 10000]
    ledger = Ledger.open(state)
    moves = [e for e in ledger.history(MODEL) if e.actor == "rollout"]
    ledger.close()
    assert {(e.alias, e.to_version) for e in moves} >= {(CHAMPION, "2"), (PREVIOUS, "1")}
    assert all(e.reason for e in moves)
    assert {e.source for e in moves} == {f"rollout:{outcome.rollout_id}"}
    # `tuneops lineage NAME@champion` names the rollout that made the version champion.
    from rich.console import Console

    from tuneops.registry.conventions import ModelRef
    from tuneops.registry.lineage import build_lineage
    from tuneops.registry.render import lineage_tree

    ledger = Ledger.open(state)
    lineage = build_lineage(store, ledger, ModelRef(MODEL, alias=CHAMPION))
    ledger.close()
    console = Console(record=True, width=300)
    console.print(lineage_tree(lineage))
    assert f"made champion by rollout {outcome.rollout_id}" in console.export_text()
    # Sticky users: nobody served by the challenger went back to the champion while it rose.
    rs = RolloutStore.open(state)
    last_judged = [s.at for s in rs.steps(outcome.rollout_id) if s.verdict][-1]
    rs.close()
    # Up to the last judged look: afterwards the simulator (no alias refresh) knows no promotion.
    rows = RequestLog.open(state).window(MODEL, outcome_start(state, outcome.rollout_id), last_judged)
    seen: dict[str, list[str]] = {}
    for r in rows:
        if r.version in ("1", "2") and r.arm in ("champion", "challenger"):
            seen.setdefault(r.user_key_hash or "", []).append(r.arm)
    for arms in seen.values():
        if "challenger" in arms:
            first = arms.index("challenger")
            assert "champion" not in arms[first:], "a challenger user went back to the champion"
    # A re-run finds the rollout finished and promotes nothing twice.
    again = rollout(spec_path=str(spec))
    assert again.rollout_id == outcome.rollout_id and again.status == "promoted"


@pytest.mark.slow
def test_bad_challenger_is_rolled_back_after_the_minimum_sample(
    prefect_harness: None, project: tuple[Path, str]
) -> None:
    from tuneops.flows.rollout import rollout

    spec, state = project
    with Traffic(state, challenger_error_rate=0.5):
        outcome = rollout(spec_path=str(spec))
    assert outcome.status == "rolled-back" and "error_rate" in outcome.reason
    assert RoutingState.open(state).get(MODEL).weight == 0
    assert RegistryStore.from_settings(_settings(spec)).aliases(MODEL)[CHAMPION] == "1"
    from tuneops.tasks.rollout.state import RolloutStore

    rs = RolloutStore.open(state)
    judged = [s for s in rs.steps(outcome.rollout_id) if s.verdict]
    rs.close()
    # Rolled back at the first look whose challenger sample reached the minimum, still at 5%.
    assert judged[-1].action == "rollback" and judged[-1].weight == 500
    waited = judged[:-1]
    assert all(s.action == "wait" for s in waited)


@pytest.mark.slow
def test_low_traffic_waits_then_aborts_for_insufficient_traffic(
    prefect_harness: None, project: tuple[Path, str]
) -> None:
    from tuneops.flows.rollout import rollout

    spec, state = project
    spec.write_text(spec.read_text().replace("max_duration_seconds: 600", "max_duration_seconds: 3"))
    with Traffic(state, challenger_error_rate=0.0, per_tick=1, tick=0.5):
        outcome = rollout(spec_path=str(spec))
    assert outcome.status == "aborted" and outcome.reason.startswith("insufficient traffic")
    from tuneops.tasks.rollout.state import RolloutStore

    rs = RolloutStore.open(state)
    judged = [s for s in rs.steps(outcome.rollout_id) if s.verdict]
    rs.close()
    assert all(s.action == "wait" for s in judged[:-1]) and judged[-1].action == "abort"
    assert RoutingState.open(state).get(MODEL).weight == 0


@pytest.mark.slow
def test_a_stopped_rollout_resumes_its_step(prefect_harness: None, project: tuple[Path, str]) -> None:
    """A run that stops mid-step (max_intervals here, a kill in life) is resumed at that step."""
    from tuneops.flows.rollout import rollout
    from tuneops.tasks.rollout.state import RolloutStore

    spec, state = project
    with Traffic(state, challenger_error_rate=0.0, per_tick=2, tick=0.2):
        first = rollout(spec_path=str(spec), max_intervals=2)
    assert first.status == "running"
    rs = RolloutStore.open(state)
    before = rs.get(first.rollout_id)
    rs.close()
    with Traffic(state, challenger_error_rate=0.0):
        second = rollout(spec_path=str(spec))
    assert second.resumed and second.rollout_id == first.rollout_id and second.status == "promoted"
    rs = RolloutStore.open(state)
    steps = rs.steps(first.rollout_id)
    rs.close()
    assert before.step_index == 0
    assert [s.weight for s in steps if s.action == "enter"] == [2500, 5000, 10000]  # 5% was never re-entered


def outcome_start(state: str, rollout_id: int) -> Any:
    from tuneops.tasks.rollout.state import RolloutStore

    rs = RolloutStore.open(state)
    try:
        return rs.get(rollout_id).started_at
    finally:
        rs.close()


def _settings(spec: Path) -> Any:
    from tuneops.settings import TuneopsSettings

    return TuneopsSettings.load(spec.parent)
