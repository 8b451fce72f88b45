"""The UI path: a real ``mlflow server``, aliases moved with the call the MLflow UI makes.

Covers both mechanisms that bring hand-made moves into the ledger: reconciliation (no webhook)
and MLflow's registry webhooks delivered to our receiver.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tuneops.processes import free_port
from tuneops.registry.conventions import OBSERVED_ACTOR, ModelRef
from tuneops.registry.ledger import Ledger
from tuneops.registry.lineage import build_lineage
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.promotion import reconcile
from tuneops.registry.webhooks import WEBHOOK_ACTOR, WebhookReceiver, install_webhook

pytestmark = pytest.mark.slow
UI_ALIAS_ENDPOINT = "/ajax-api/2.0/mlflow/registered-models/alias"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, _mlflow_template: Path) -> Iterator[str]:
    """``mlflow server`` on SQLite with webhooks enabled for a receiver on 127.0.0.1."""
    from cryptography.fernet import Fernet

    folder = tmp_path_factory.mktemp("mlflow-server")
    shutil.copyfile(_mlflow_template, folder / "mlflow.db")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(
        {
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "MLFLOW_WEBHOOK_CACHE_TTL": "1",
        }
    )
    log = (folder / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            (folder / "artifacts").as_uri(),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(folder / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not become healthy in 180 s")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def store(mlflow_server: str) -> RegistryStore:
    """Overrides the SQLite store: everything goes through the server's REST API."""
    return RegistryStore(mlflow_server)


def move_alias_like_the_ui(server: str, name: str, alias: str, version: str) -> None:
    response = httpx.post(
        f"{server}{UI_ALIAS_ENDPOINT}", json={"name": name, "alias": alias, "version": version}, timeout=30
    )
    assert response.status_code == 200, response.text


def test_ui_moves_are_found_by_reconciliation(
    mlflow_server: str, build_version: Any, store: RegistryStore, ledger: Ledger
) -> None:
    built = build_version(name="ui-reconciled", job_id="ui-1")
    move_alias_like_the_ui(mlflow_server, "ui-reconciled", "champion", built.version.version)
    (entry,) = reconcile(store, ledger, "ui-reconciled")
    assert (entry.alias, entry.to_version, entry.actor) == ("champion", built.version.version, OBSERVED_ACTOR)
    lineage = build_lineage(store, ledger, ModelRef("ui-reconciled", "champion"))
    assert lineage.finetune.job_id == "ui-1" and [e.id for e in lineage.ledger] == [entry.id]


def test_ui_moves_arrive_through_webhooks(
    mlflow_server: str, build_version: Any, store: RegistryStore, ledger: Ledger
) -> None:
    built = build_version(name="ui-webhook", job_id="ui-2")
    receiver = WebhookReceiver(store, ledger, "s3cret").start()
    try:
        install_webhook(store, receiver.url, "s3cret")
        move_alias_like_the_ui(mlflow_server, "ui-webhook", "challenger", built.version.version)
        deadline = time.monotonic() + 90  # MLflow delivers asynchronously (and caches hooks for the TTL)
        while not ledger.history("ui-webhook") and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        receiver.stop()
    (entry,) = ledger.history("ui-webhook")
    assert (entry.alias, entry.to_version, entry.actor, entry.source) == (
        "challenger",
        built.version.version,
        WEBHOOK_ACTOR,
        "webhook",
    )
    lineage = build_lineage(store, ledger, ModelRef("ui-webhook", "challenger"))
    assert lineage.version == built.version.version and lineage.ledger[0].source == "webhook"
