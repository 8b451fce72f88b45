"""The ``rollout`` flow against the *real* gateway: OpenAI-protocol stub upstreams, the official SDK.

Each version is served by its own stub upstream (``tuneops.testing.chat_stub``): the champion's
answers the claims questions with their reference answers; a challenger's stub answers the same
(good), answers differently from what was evaluated (a wrong deployment), or fails (fault
injection). Traffic is sticky users sending chat requests through the gateway with ``openai``;
everything the flow judges comes from the request log the gateway wrote.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn

from tuneops.processes import free_port
from tuneops.registry.conventions import CHALLENGER, CHAMPION, PREVIOUS
from tuneops.registry.ledger import Ledger
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.promotion import promote
from tuneops.registry.tracking import RunTracker
from tuneops.requestlog import LoggedRequest, RequestLog, RequestLogWriter
from tuneops.routing_state import RoutingState
from tuneops.serving.gateway.app import Gateway, GatewayConfig
from tuneops.serving.gateway.upstreams import provider_endpoints
from tuneops.serving.local.testing import claims_chat_examples
from tuneops.settings import TuneopsSettings
from tuneops.spec import FormatConfig, LocalProviderConfig, ServingConfig
from tuneops.testing.chat_stub import ChatStub, Messages, echo_answer, running_chat_stub

pytestmark = pytest.mark.slow
MODEL = "claims-bot"
FORMAT = r"^CLAIM_TYPE=\w+; PRIORITY=\w+; NEXT=\w+\.$"
ROWS = claims_chat_examples(60, seed=3)
REFERENCE = {row["messages"][1]["content"]: row["messages"][2]["content"] for row in ROWS}


def reference_answer(model: str, messages: Messages) -> str:
    """What the evaluated model answered: the reference answer of the claim."""
    return REFERENCE.get(echo_answer(model, messages), "CLAIM_TYPE=other; PRIORITY=low; NEXT=review.")


def different_answer(model: str, messages: Messages) -> str:
    """Another model behind the endpoint: well formed, but not what was evaluated."""
    return "CLAIM_TYPE=other; PRIORITY=low; NEXT=review."


def spec_text(strategy: str, extra: str = "") -> str:
    return f"""
model: {{name: {MODEL}, base_model: tuneops-tiny}}
data: {{train: train.jsonl}}
evaluation:
  format: {{regex: '{FORMAT}'}}
  max_tokens: 40
rollout:
  strategy: {strategy}
  steps: [5, 25, 50, 100]
  min_requests_per_step: 30
  min_samples_per_arm: 20
  min_step_seconds: 0
  bake_seconds: 0
  analysis_interval_seconds: 0.5
  max_duration_seconds: 240
  smoke_rows: 10
  guardrails:
    - {{metric: error_rate, min_absolute_change: 0}}
    - {{metric: format_compliance, min_absolute_change: 0}}
    - {{metric: latency_p95_ms, min_relative_change: -1.0}}
{extra}
"""


@dataclass
class LiveProject:
    """A project whose versions are served by stubs behind a real gateway on a free port."""

    spec: Path
    state_url: str
    store: RegistryStore
    gateway_url: str
    champion_stub: ChatStub
    challenger_stub: ChatStub
    writer: RequestLogWriter
    settings: TuneopsSettings = field(repr=False)

    def rows(self) -> list[LoggedRequest]:
        """Every stored request-log row (after the gateway's writer flushed its queue)."""
        assert self.writer.flush(30)
        log = RequestLog.open(self.state_url)
        try:
            from tuneops.append_only import utcnow

            return log.window(MODEL, utcnow().replace(year=2000), utcnow(), roles=("answer", "failover"))
        finally:
            log.close()


def register_versions(store: RegistryStore, tracker: RunTracker, evaluated: list[dict[str, Any]]) -> None:
    """v1 (champion, provider ``local``) and v2 (challenger, provider ``challenger-stub``),
    v2 with an evaluation run whose ``evaluation/rows.json`` holds the answers it was judged on."""
    store.ensure_registered_model(MODEL)
    store.create_version(MODEL, "file:///v1", None, {"tuneops.provider": "local", "tuneops.gate": "passed",  # type: ignore[arg-type]
                         "tuneops.endpoint_model": "ft:claims-v1"}, "", None)  # fmt: skip
    run_id = tracker.start_run(MODEL, "evaluation", {"tuneops.kind": "evaluation"})
    table = {
        "row": list(range(len(evaluated))),
        "model": ["candidate"] * len(evaluated),
        "query": [r["messages"][1]["content"] for r in evaluated],
        "reference": [r["messages"][2]["content"] for r in evaluated],
        "response": [r["messages"][2]["content"] for r in evaluated],
    }
    tracker.log_table(run_id, table, "evaluation/rows.json")
    tracker.finish_run(run_id)
    tags = {"tuneops.provider": "challenger-stub", "tuneops.endpoint_model": "ft:claims-v2",
            "tuneops.eval_run_id": run_id, "tuneops.gate": "passed"}  # fmt: skip
    store.create_version(MODEL, "file:///v2", None, tags, "", None)  # type: ignore[arg-type]


@contextmanager
def serve_gateway(settings: TuneopsSettings, store: RegistryStore, endpoints: dict[str, Any],
                  spool: Path) -> Iterator[tuple[str, RequestLogWriter]]:  # fmt: skip
    """The gateway (what ``tuneops serve gateway`` runs) served by uvicorn on a free port."""
    state_url = settings.state_db_url or ""
    with ExitStack() as stack:
        routing, ledger, log = (
            RoutingState.open(state_url),
            Ledger.open(state_url),
            RequestLog.open(state_url),
        )
        for closing in (routing, ledger, log):
            stack.callback(closing.close)
        writer = RequestLogWriter(log, spool)
        writer.start()
        stack.callback(writer.close)
        config = GatewayConfig((MODEL,), serving=ServingConfig(refresh_seconds=0.2),
                               answer_format=FormatConfig(regex=FORMAT))  # fmt: skip
        gateway = Gateway(config, store=store, routing=routing, ledger=ledger, request_log=log,
                          writer=writer, endpoints=endpoints)  # fmt: skip
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(gateway.asgi(), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, name="gateway", daemon=True)
        thread.start()
        while not server.started:
            assert thread.is_alive(), "the gateway stopped while starting"
            thread.join(0.02)
        try:
            yield f"http://127.0.0.1:{port}/v1", writer
        finally:
            server.should_exit = True
            thread.join(30)


@contextmanager
def live_project(tmp_path: Path, mlflow_store: Any, monkeypatch: pytest.MonkeyPatch, *, strategy: str,
                 challenger: dict[str, Any], extra: str = "") -> Iterator[LiveProject]:  # fmt: skip
    """Versions, aliases, the two stubs and the gateway; ``challenger`` configures its stub."""
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("TUNEOPS_STATE_DB_URL", state_url)
    monkeypatch.setenv("TUNEOPS_TRACKING_URI", mlflow_store.tracking_uri)
    monkeypatch.setenv("TUNEOPS_ARTIFACT_ROOT", mlflow_store.artifact_root)
    monkeypatch.delenv("TUNEOPS_GATEWAY_API_KEYS", raising=False)
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.jsonl").write_text("")
    spec = project / "tuneops.yaml"
    spec.write_text(spec_text(strategy, extra))
    settings = TuneopsSettings.load(project)
    store = RegistryStore.from_settings(settings)
    register_versions(
        store, RunTracker.open(mlflow_store.tracking_uri, mlflow_store.artifact_root), ROWS[:20]
    )
    ledger = Ledger.open(state_url)
    promote(store, ledger, MODEL, "1", CHAMPION, reason="first champion")
    promote(store, ledger, MODEL, "2", CHALLENGER, reason="gate passed")
    ledger.close()
    with (
        running_chat_stub(answer=reference_answer, latency_s=0.002) as champion_stub,
        running_chat_stub(
            **{"answer": reference_answer, "latency_s": 0.002, **challenger}
        ) as challenger_stub,
    ):
        endpoints = provider_endpoints(LocalProviderConfig(base_url=champion_stub.base_url), settings)
        endpoints["challenger-stub"] = dataclasses.replace(
            endpoints["local"], base_url=challenger_stub.base_url
        )
        with serve_gateway(settings, store, endpoints, tmp_path / "spool") as (url, writer):
            yield LiveProject(spec, state_url, store, url, champion_stub, challenger_stub, writer, settings)


class Load:
    """Sticky users sending claims questions through the gateway with the official SDK."""

    def __init__(self, gateway_url: str, *, users: int = 200, workers: int = 4) -> None:
        self.url, self.users, self.workers = gateway_url, users, workers
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.sent = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(workers)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self, worker: int) -> None:
        rng = random.Random(worker)
        client = openai.OpenAI(base_url=self.url, api_key="unused", max_retries=0, timeout=30)
        while not self.stop.is_set():
            row = rng.choice(ROWS)
            try:
                user = f"user-{rng.randrange(self.users)}"
                client.chat.completions.create(model=MODEL, messages=row["messages"][:2], user=user)
            except openai.APIError as exc:
                with self.lock:
                    self.errors.append(repr(exc))
            with self.lock:
                self.sent += 1
        client.close()


def steps_of(state_url: str, rollout_id: int) -> list[Any]:
    from tuneops.tasks.rollout.state import RolloutStore

    store = RolloutStore.open(state_url)
    try:
        return store.steps(rollout_id)
    finally:
        store.close()


# --- blue-green: the pinned smoke replay ---------------------------------------------------------


def test_blue_green_switches_when_the_live_challenger_answers_as_evaluated(
    prefect_harness: None, tmp_path: Path, mlflow_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuneops.flows.rollout import rollout

    with live_project(tmp_path, mlflow_store, monkeypatch, strategy="blue-green", challenger={}) as live:
        outcome = rollout(spec_path=str(live.spec), gateway_url=live.gateway_url, max_intervals=1)
        smoke = [s for s in steps_of(live.state_url, outcome.rollout_id) if s.action.startswith("smoke")]
        assert [s.action for s in smoke] == ["smoke-passed"], smoke
        assert "10/10 answers identical" in smoke[0].summary
        assert live.challenger_stub.stats.requests == 10  # the replay reached the challenger's endpoint only
        assert live.champion_stub.stats.requests == 0
        aliases = live.store.aliases(MODEL)
        assert aliases[CHAMPION] == "2" and aliases[PREVIOUS] == "1"  # switched; bake judges next
        pinned = [r for r in live.rows() if r.arm == "pinned"]
        assert len(pinned) == 10 and {r.version for r in pinned} == {"2"}


def test_blue_green_refuses_to_switch_to_a_deployment_that_answers_differently(
    prefect_harness: None, tmp_path: Path, mlflow_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuneops.flows.rollout import rollout

    wrong = {"answer": different_answer}
    with live_project(tmp_path, mlflow_store, monkeypatch, strategy="blue-green", challenger=wrong) as live:
        outcome = rollout(spec_path=str(live.spec), gateway_url=live.gateway_url)
        assert outcome.status == "rolled-back"
        assert outcome.reason.startswith("smoke failed") and "differing rows" in outcome.reason
        aliases = live.store.aliases(MODEL)
        assert aliases[CHAMPION] == "1" and PREVIOUS not in aliases  # never switched
        assert RoutingState.open(live.state_url).get(MODEL).weight == 0
        actions = [s.action for s in steps_of(live.state_url, outcome.rollout_id)]
        assert "smoke-failed" in actions and "enter" not in actions
        ledger = Ledger.open(live.state_url)
        assert not [e for e in ledger.history(MODEL) if e.actor == "rollout"]  # no alias moved
        ledger.close()


# --- canary under steady load through the gateway --------------------------------------------


def test_a_good_challenger_goes_5_25_50_100_and_users_keep_their_arm(
    prefect_harness: None, tmp_path: Path, mlflow_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuneops.flows.rollout import rollout

    with live_project(tmp_path, mlflow_store, monkeypatch, strategy="canary", challenger={}) as live:
        with Load(live.gateway_url) as load:
            outcome = rollout(spec_path=str(live.spec), gateway_url=live.gateway_url)
        assert outcome.status == "promoted", outcome.reason
        assert load.errors == []
        steps = steps_of(live.state_url, outcome.rollout_id)
        assert [s.weight for s in steps if s.action == "enter"] == [2500, 5000, 10000]
        assert [s.action for s in steps if s.verdict][-1] == "proceed"
        aliases = live.store.aliases(MODEL)
        assert aliases[CHAMPION] == "2" and aliases[PREVIOUS] == "1" and CHALLENGER not in aliases
        ledger = Ledger.open(live.state_url)
        moves = [e for e in ledger.history(MODEL) if e.actor == "rollout"]
        ledger.close()
        assert {(e.alias, e.to_version) for e in moves} >= {(CHAMPION, "2"), (PREVIOUS, "1")}
        assert all(f"rollout {outcome.rollout_id}" in e.reason for e in moves)
        # Sticky users, from the request log: once served by the challenger's version, never again
        # by the old champion's, through every step and the promotion itself. Versions, not arm
        # labels: between MLflow's alias move and its ledger entry, version 2 is already the
        # champion and rightly answers on arm "champion" (an arm check there once failed CI).
        served: dict[str, list[tuple[str | None, str | None]]] = {}
        for r in sorted(live.rows(), key=lambda row: row.at):
            if r.role == "answer":
                served.setdefault(r.user_key_hash or "", []).append((r.arm, r.version))
        movers = [seq for seq in served.values() if ("challenger", "2") in seq]
        assert len(movers) >= 20  # the challenger's share grew over many users
        for seq in movers:
            versions = [version for _, version in seq]
            assert "1" not in versions[versions.index("2") :], f"a challenger user went back: {seq}"
        seen_both_steps = [seq for seq in movers if seq.index(("challenger", "2")) > 0]
        assert seen_both_steps, "some users moved to the challenger as its weight rose"


def test_a_failing_challenger_is_rolled_back_at_the_first_look_past_the_minimum_sample(
    prefect_harness: None, tmp_path: Path, mlflow_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuneops.flows.rollout import rollout

    faults = {"share_500": 0.8, "seed": 7}
    with live_project(tmp_path, mlflow_store, monkeypatch, strategy="canary", challenger=faults) as live:
        with Load(live.gateway_url) as load:
            outcome = rollout(spec_path=str(live.spec), gateway_url=live.gateway_url)
        assert outcome.status == "rolled-back" and "error_rate" in outcome.reason
        assert load.errors == []  # every failed challenger attempt was answered by the champion
        judged = [s for s in steps_of(live.state_url, outcome.rollout_id) if s.verdict]
        assert judged[-1].action == "rollback" and judged[-1].weight == 500
        enough = [
            s for s in judged
            if next(c for c in s.verdict["checks"] if c["metric"] == "error_rate")["challenger_samples"] >= 20
        ]  # fmt: skip
        looks_after_minimum = len(judged) - 1 - judged.index(enough[0])
        assert looks_after_minimum <= 1, "rolled back within one analysis interval after the minimum sample"
        assert all(s.action == "wait" for s in judged[:-1])
        assert RoutingState.open(live.state_url).get(MODEL).weight == 0
        assert live.store.aliases(MODEL)[CHAMPION] == "1"
        rows = live.rows()
        champion_answers = [r for r in rows if r.arm == "champion" and r.role == "answer"]
        assert champion_answers and all(r.status_code == 200 for r in champion_answers)
        assert any(r.role == "failover" and r.version == "2" for r in rows)
