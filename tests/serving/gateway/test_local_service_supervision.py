"""``tuneops serve gateway`` starts, restarts and stops the local service a served version needs.

Real processes throughout: the gateway runs as the CLI in a project folder whose champion is a
``local`` version of ``tuneops-tiny`` (the session's test-profile build, copied into the models
dir so the service needs no build), clients are the official SDK, and the service is the real
one, found as the gateway's child process.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from tests.serving.gateway.conftest import MODEL
from tuneops.processes import ManagedProcess, free_port, start_process
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.serving.local.launcher import answers_openai
from tuneops.serving.local.testing import serve_locally, tiny_test_model  # noqa: F401
from tuneops.serving.local.tinymodel import TINY_MODEL_ID
from tuneops.settings import QUIET_ENVIRONMENT

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "Is theft from a car covered?"}]
UPSTREAM_TIMEOUT = 20


def write_project(root: Path, local_url: str) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "data" / "train.jsonl").write_text("")
    (root / "tuneops.yaml").write_text(
        f"model:\n  name: {MODEL}\n  base_model: {TINY_MODEL_ID}\n"
        f"provider:\n  kind: local\n  base_url: {local_url}\n"
        "data:\n  train: data/train.jsonl\n"
        f"serving:\n  refresh_seconds: 0.5\n  upstream_timeout_seconds: {UPSTREAM_TIMEOUT}\n"
    )
    return root


def register_local_champion(store: RegistryStore) -> None:
    store.ensure_registered_model(MODEL)
    version = store.create_version(
        MODEL, f"{store.artifact_root}/tiny", "",
        {"tuneops.provider": "local", "tuneops.endpoint_model": TINY_MODEL_ID}, "", None,
    )  # fmt: skip
    store.set_alias(MODEL, "champion", version.version)


def start_gateway(project: Path, store: RegistryStore, *extra: str) -> ManagedProcess:
    port = free_port()
    command = [sys.executable, "-m", "tuneops.cli.main", "serve", "gateway", "--spec",
               str(project / "tuneops.yaml"), "--port", str(port), *extra]  # fmt: skip
    env = {
        **QUIET_ENVIRONMENT,
        "TUNEOPS_TRACKING_URI": store.tracking_uri,
        "TUNEOPS_ARTIFACT_ROOT": store.artifact_root,
        "TUNEOPS_TINY_PROFILE": "test",
        "TUNEOPS_GATEWAY_API_KEYS": None,
    }
    return start_process(
        "the gateway", command, url=f"http://127.0.0.1:{port}/v1", health=f"http://127.0.0.1:{port}/health",
        log_path=project / "gateway.log", env=env, append_log=True, timeout=240,
    )  # fmt: skip


def service_children(gateway: ManagedProcess) -> list[psutil.Process]:
    children = psutil.Process(gateway.process.pid).children()
    return [c for c in children if "tuneops.serving.local" in " ".join(c.cmdline())]


def restarts(gateway: ManagedProcess) -> float:
    text = httpx.get(gateway.url.removesuffix("/v1") + "/metrics", timeout=5).text
    line = next(x for x in text.splitlines() if x.startswith("tuneops_gateway_local_service_restarts_total"))
    return float(line.split()[-1])


def ask(client: openai.OpenAI) -> str:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION, max_tokens=8)
    assert raw.parse().choices[0].message.content is not None
    return raw.headers["x-tuneops-model-version"]


@pytest.fixture
def project(tmp_path: Path, tiny_test_model: Path) -> Path:  # noqa: F811 - the fixture imported above
    root = write_project(tmp_path / "project", f"http://127.0.0.1:{free_port()}/v1")
    shutil.copytree(tiny_test_model, root / ".tuneops" / "models" / "base" / TINY_MODEL_ID)
    return root


def test_the_gateway_starts_restarts_and_stops_the_local_service(project: Path, store: RegistryStore) -> None:
    register_local_champion(store)
    gateway = start_gateway(project, store)
    try:
        (first,) = service_children(gateway)  # started before the gateway answered its health check
        client = openai.OpenAI(base_url=gateway.url, api_key="none", max_retries=0, timeout=60)
        assert ask(client) == "1"

        first.send_signal(signal.SIGKILL)
        first.wait(10)
        started = time.monotonic()
        try:  # during the restart: the gateway's usual OpenAI-shaped error, never a hang
            ask(client)
        except openai.APIStatusError as exc:
            assert exc.status_code in (502, 503, 504), exc
        assert time.monotonic() - started < UPSTREAM_TIMEOUT + 5
        while True:
            try:
                assert ask(client) == "1"
                break
            except openai.APIStatusError:
                assert time.monotonic() - started < 120, gateway.log_tail()
                time.sleep(0.5)
        (second,) = service_children(gateway)
        assert second.pid != first.pid
        assert restarts(gateway) == 1.0
    finally:
        gateway.stop()
    assert gateway.process.returncode == 0, gateway.log_tail()
    assert not second.is_running()  # the child it started went with it
    log = gateway.log_path.read_text()
    assert "starting the local service at" in log
    assert "local service exited (code -9); restarting in 0.5 s (attempt 1)" in log
    assert log.count("restarting in") == 1


def test_a_running_service_is_used_and_left_running(
    tmp_path: Path,
    store: RegistryStore,
    tiny_test_model: Path,  # noqa: F811 - the fixture imported above
) -> None:
    register_local_champion(store)
    with serve_locally(tmp_path / "theirs", tiny_test_model) as theirs:
        project = write_project(tmp_path / "project", theirs.base_url)
        gateway = start_gateway(project, store)
        try:
            assert service_children(gateway) == []
            client = openai.OpenAI(base_url=gateway.url, api_key="none", max_retries=0, timeout=60)
            assert ask(client) == "1"
        finally:
            gateway.stop()
        assert gateway.process.returncode == 0, gateway.log_tail()
        assert theirs.managed.process.poll() is None and answers_openai(theirs.base_url)
        assert "using the local service that already answers" in gateway.log_path.read_text()


def test_no_local_service_starts_nothing(project: Path, store: RegistryStore) -> None:
    register_local_champion(store)
    gateway = start_gateway(project, store, "--no-local-service")
    try:
        assert service_children(gateway) == []
        client = openai.OpenAI(base_url=gateway.url, api_key="none", max_retries=0, timeout=60)
        with pytest.raises(openai.APIStatusError) as raised:
            ask(client)
        assert raised.value.status_code == 502
    finally:
        gateway.stop()
    assert gateway.process.returncode == 0, gateway.log_tail()
    assert "local service" not in gateway.log_path.read_text()
