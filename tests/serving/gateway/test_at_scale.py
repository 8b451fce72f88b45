"""Two gateway replicas on a PostgreSQL state database, MLflow as a server on PostgreSQL.

Every part is a real process on 127.0.0.1: ``mlflow server`` (PostgreSQL backend), two
``tuneops serve gateway`` processes sharing one PostgreSQL state database, and the chat stub
upstream. The replicas must assign every user the same way (the hash is of experiment id and
key, nothing per-process), both must follow an alias moved with ``MlflowClient`` against the
server (what the MLflow UI does) within their refresh period, and the ledger must show that move
once although both replicas observed it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from tests.serving.gateway.conftest import ENDPOINT_MODELS, MODEL
from tests.serving.gateway.test_process import KEY, answer_rows, start_gateway, write_project
from tuneops.processes import free_port
from tuneops.registry.ledger import Ledger
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.routing_state import RoutingState
from tuneops.testing.chat_stub import ChatStub
from tuneops.testing.processes import start_mlflow_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
QUESTION = [{"role": "user", "content": "Is a cracked windscreen covered?"}]
REFRESH_SECONDS = 2.0  # the spec's default bound; the acceptance asks for a move within 5 s


@pytest.fixture
def databases(postgres_url: str) -> Iterator[dict[str, str]]:
    """Two throwaway databases beside the session's: MLflow's and tuneops' state."""
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    names = {part: f"tuneops_{part}_{uuid.uuid4().hex[:8]}" for part in ("mlflow", "state")}
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    server = postgres_url.rsplit("/", 1)[0].split("://", 1)[1]
    yield {part: f"postgresql+psycopg2://{server}/{name}" for part, name in names.items()}
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def register_on_server(store: RegistryStore) -> None:
    """Versions 1-3 as ``conftest.register`` makes them; a server wants each source under a run."""
    store.ensure_registered_model(MODEL)
    client = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.registry_uri)
    experiment_id = store.ensure_experiment(MODEL)
    for version in ("1", "2", "3"):
        run = client.create_run(experiment_id, run_name=f"register-claims-v{version}")
        client.set_terminated(run.info.run_id)
        tags = {"tuneops.provider": "local", "tuneops.endpoint_model": ENDPOINT_MODELS[version]}
        created = store.create_version(
            MODEL, f"{run.info.artifact_uri}/model", run.info.run_id, tags, "", None
        )
        assert created.version == version


def _served(base_url: str, users: list[str]) -> dict[str, tuple[str, str]]:
    """Each user's (version, arm) from one request per user to the gateway at ``base_url``."""
    client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=30)

    def one(user: str) -> tuple[str, tuple[str, str]]:
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION, user=user)
        version = raw.headers["x-tuneops-model-version"]
        assert raw.parse().choices[0].message.content.startswith(f"v{version} says")
        return user, (version, raw.headers["x-tuneops-arm"])

    try:
        with ThreadPoolExecutor(16) as pool:
            return dict(pool.map(one, users))
    finally:
        client.close()


def test_two_gateways_on_postgres_agree_and_follow_an_alias_moved_on_the_mlflow_server(
    databases: dict[str, str], stub: ChatStub, tmp_path: Path
) -> None:
    mlflow_server = start_mlflow_server(
        backend_store_uri=databases["mlflow"],
        artifacts_destination=(tmp_path / "mlartifacts").as_uri(),
        log_dir=tmp_path / "logs",
    )
    state_url = databases["state"]
    with mlflow_server:
        store = RegistryStore(mlflow_server.url, "mlflow-artifacts:/claims")
        register_on_server(store)
        store.set_alias(MODEL, "champion", "1")
        store.set_alias(MODEL, "challenger", "2")
        routing = RoutingState.open(state_url)
        routing.set_rollout(
            MODEL, challenger_version="2", weight=3000, experiment_id="scale-1", actor="test", reason="30%"
        )
        routing.close()
        project = write_project(tmp_path / "project", stub.base_url)
        spec = project.read_text().replace("refresh_seconds: 0.5", f"refresh_seconds: {REFRESH_SECONDS}")
        project.write_text(spec)
        gateways = [
            start_gateway(
                project.parent, store, state_url, free_port(), "--spool", str(tmp_path / f"spool-{i}")
            )
            for i in range(2)
        ]
        try:
            users = [f"policyholder-{i}" for i in range(600)]
            first, second = (_served(g.url, users) for g in gateways)
            assert first == second  # every assignment agrees across the replicas
            arms = {arm for _, arm in first.values()}
            assert arms == {"champion", "challenger"}
            assert {first[u] for u in users} == {("1", "champion"), ("2", "challenger")}

            # the MLflow UI's own call, against the running server
            ui = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
            ui.set_registered_model_alias(MODEL, "champion", "3")
            moved_at = time.monotonic()
            champion_users = [u for u in users if first[u][1] == "champion"][:20]
            picked_up: list[float] = []
            for gateway in gateways:
                deadline = moved_at + 60  # a hang guard only: the refresh period bounds this
                while {v for v, _ in _served(gateway.url, champion_users[:4]).values()} != {"3"}:
                    assert time.monotonic() < deadline, "the alias move never reached " + gateway.url
                    time.sleep(0.05)
                picked_up.append(time.monotonic() - moved_at)
            after = [_served(g.url, users) for g in gateways]
            assert after[0] == after[1]
            assert all(after[0][u] == ("3", "champion") for u in champion_users)
            # users of the challenger stay there: the move of champion changes no bucket
            assert all(after[0][u] == first[u] for u in users if first[u][1] == "challenger")
        finally:
            for gateway in gateways:
                gateway.stop()
        print(f"alias move picked up after {', '.join(f'{s:.2f} s' for s in picked_up)}")
        for gateway in gateways:
            assert gateway.process.returncode == 0, gateway.log_tail()

    ledger = Ledger.open(state_url)
    try:
        moves = [(e.from_version, e.to_version) for e in ledger.history(MODEL, "champion")]
        sources = {e.source for e in ledger.history(MODEL, "champion") if e.to_version == "3"}
    finally:
        ledger.close()
    assert moves.count(("1", "3")) == 1, moves  # both replicas saw it; the ledger holds it once
    assert sources == {"gateway"}
    rows = answer_rows(state_url)
    assert len(rows) == len({r.request_id for r in rows})
    assert {r.version for r in rows} == {"1", "2", "3"}
