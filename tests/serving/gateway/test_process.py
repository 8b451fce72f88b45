"""``tuneops serve gateway`` as a user runs it, and what survives ``kill -9`` under load.

The gateway runs as a child process in a project folder (spec + settings from the environment),
found and stopped through :mod:`tuneops.processes`; clients are the official SDK in threads.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import sqlalchemy as sa

from tests.serving.gateway.conftest import MODEL
from tuneops.processes import ManagedProcess, free_port, start_process
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.requestlog import request_table
from tuneops.settings import QUIET_ENVIRONMENT
from tuneops.testing.chat_stub import ChatStub

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "Is theft from a car covered?"}]
KEY = "gw-process-key"


def write_project(root: Path, upstream: str) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "data" / "train.jsonl").write_text("")
    spec = root / "tuneops.yaml"
    spec.write_text(
        f"model:\n  name: {MODEL}\n  base_model: tuneops-tiny\n"
        f"provider:\n  kind: local\n  base_url: {upstream}\n"
        "data:\n  train: data/train.jsonl\n"
        "serving:\n  refresh_seconds: 0.5\n"
    )
    return spec


def start_gateway(
    project: Path, store: RegistryStore, state_url: str, port: int, *extra: str
) -> ManagedProcess:
    command = [sys.executable, "-m", "tuneops.cli.main", "serve", "gateway", "--spec",
               str(project / "tuneops.yaml"), "--port", str(port), *extra]  # fmt: skip
    env = {
        **QUIET_ENVIRONMENT,
        "TUNEOPS_TRACKING_URI": store.tracking_uri,
        "TUNEOPS_ARTIFACT_ROOT": store.artifact_root,
        "TUNEOPS_STATE_DB_URL": state_url,
        "TUNEOPS_GATEWAY_API_KEYS": f"other-key,{KEY}",
    }
    return start_process(
        "the gateway", command, url=f"http://127.0.0.1:{port}/v1", health=f"http://127.0.0.1:{port}/health",
        log_path=project / "gateway.log", env=env, append_log=True, timeout=120,
    )  # fmt: skip


def answer_rows(state_url: str) -> list[sa.Row]:
    engine = sa.create_engine(state_url)
    try:
        with engine.connect() as conn:
            query = request_table.select().where(request_table.c.role == "answer")
            return list(conn.execute(query))
    finally:
        engine.dispose()


@pytest.fixture
def project(tmp_path: Path, stub: ChatStub) -> Path:
    return write_project(tmp_path / "project", stub.base_url)


def test_serve_gateway_answers_with_the_champion(
    project: Path, claims: RegistryStore, tmp_path: Path
) -> None:
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    gateway = start_gateway(project.parent, claims, state_url, free_port())
    try:
        client = openai.OpenAI(base_url=gateway.url, api_key=KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION)
        assert raw.parse().choices[0].message.content == "v1 says: Is theft from a car covered?"
        assert raw.headers["x-tuneops-model-version"] == "1"
        chunks = list(client.chat.completions.create(model=MODEL, messages=QUESTION, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("v1 says")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=gateway.url, api_key="nope", max_retries=0).models.list()
    finally:
        gateway.stop()
    assert gateway.process.returncode == 0, gateway.log_tail()
    assert KEY not in gateway.log_path.read_text()
    assert len(answer_rows(state_url)) == 2  # a clean stop stores what was spooled


def test_kill_9_under_load_loses_no_answered_request(
    project: Path, claims: RegistryStore, tmp_path: Path
) -> None:
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    port = free_port()
    gateway = start_gateway(project.parent, claims, state_url, port)
    received: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> int:
        client = openai.OpenAI(base_url=gateway.url, api_key=KEY, max_retries=0, timeout=10)
        failures = 0
        i = 0
        while not stop.is_set():
            i += 1
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=MODEL, messages=QUESTION, user=f"w{worker}-{i}", stream=i % 2 == 0
                )
                parsed = raw.parse()
                if i % 2 == 0:
                    list(parsed)  # a stream counts as received once [DONE] arrived
            except openai.APIError:
                failures += 1
                continue
            with lock:
                received.append(raw.headers["x-request-id"])
        return failures

    try:
        with ThreadPoolExecutor(8) as pool:
            workers = [pool.submit(load, w) for w in range(8)]
            while len(received) < 300:
                threading.Event().wait(0.05)
                assert all(not w.done() for w in workers), [w.exception() for w in workers if w.done()]
            gateway.kill()  # SIGKILL mid-load: no shutdown, no flush
            stop.set()
            failures = sum(w.result() for w in workers)
        assert failures >= 1  # requests were in flight when it died
        gateway = start_gateway(project.parent, claims, state_url, port)  # replays the spool on start
    finally:
        gateway.stop()
    counts = Counter(row.request_id for row in answer_rows(state_url))
    assert received and all(counts[request_id] == 1 for request_id in received), [
        r for r in received if counts[r] != 1
    ][:5]
    assert max(counts.values()) == 1


def test_a_vanished_tracking_server_costs_one_failed_refresh_not_a_stuck_shutdown(
    project: Path, claims: RegistryStore, tmp_path: Path
) -> None:
    """MLflow's client retries a refused connection for minutes by default; the gateway's refresh
    thread then held up shutdown (a SIGTERM'd gateway lived on). Now it fails fast and stops."""
    nowhere = RegistryStore(f"http://127.0.0.1:{free_port()}", claims.artifact_root)
    gateway = start_gateway(project.parent, nowhere, f"sqlite:///{tmp_path / 'state.db'}", free_port())
    gateway.stop(timeout=20)  # SIGTERM; SIGKILL only if it is still there after 20 s
    assert gateway.process.returncode == 0, gateway.log_tail()
    assert "keeping its last table" in gateway.log_path.read_text()
