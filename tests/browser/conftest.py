"""One ``tuneops up`` stack for every browser test, and a headless Chromium to look at it.

The stack is what a user starts: ``tuneops up --detach`` in a project folder (MLflow on
PostgreSQL with artifacts on moto's S3 server, Prefect server with its UI, a process worker, the
local service on the seconds-sized model, the gateway), stopped with ``tuneops down`` and its
databases dropped at the end. The browser is Debian's ``chromium`` driven by playwright
(nothing is downloaded); a failing test leaves a screenshot under its tmp_path and prints where.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import POSTGRES_ADMIN_URL
from tuneops.processes import free_port
from tuneops.settings import QUIET_ENVIRONMENT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
MODEL = "claims-triage"


@dataclass(frozen=True)
class Stack:
    """A running ``tuneops up`` stack: its project and the settings clients use."""

    project: Path
    environment: dict[str, str]
    services: dict[str, Any]

    @property
    def mlflow_url(self) -> str:
        return self.environment["TUNEOPS_TRACKING_URI"]

    @property
    def prefect_url(self) -> str:
        return self.environment["TUNEOPS_PREFECT_UI_URL"]

    @property
    def prefect_api_url(self) -> str:
        return self.environment["PREFECT_API_URL"]

    @property
    def gateway_url(self) -> str:
        return str(self.services["gateway"]["url"])

    @property
    def state_url(self) -> str:
        return self.environment["TUNEOPS_STATE_DB_URL"]


def tuneops(project: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the tuneops CLI in ``project`` as a user would (a fresh process)."""
    env = {**os.environ, **QUIET_ENVIRONMENT, "TUNEOPS_TINY_PROFILE": "test"}
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "tuneops.cli.main", *args], cwd=project, env=env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def write_project(root: Path) -> Path:
    """A project whose spec serves through the local service on a free port."""
    root.mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "train.jsonl").write_text("")
    (root / "tuneops.yaml").write_text(
        f"model:\n  name: {MODEL}\n  base_model: tuneops-tiny\n"
        f"provider:\n  kind: local\n  base_url: http://127.0.0.1:{free_port()}/v1\n"
        "data:\n  train: data/train.jsonl\n"
        "serving:\n  refresh_seconds: 0.5\n"
        "schedule:\n  retrain_cron: '0 3 * * 1'\n  retrain_on_drift: true\n  monitor: true\n"
    )
    return root


def _drop_databases(names: list[str]) -> None:
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(
                    sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                    {"n": name},
                )
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        admin.dispose()


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Stack]:
    """``tuneops up --detach`` on free ports; ``tuneops down`` and the databases dropped after."""
    project = write_project(tmp_path_factory.mktemp("stack") / "project")
    free = ("--mlflow-port", "0", "--prefect-port", "0", "--gateway-port", "0")
    started = tuneops(project, "up", "--detach", "--postgres", POSTGRES_ADMIN_URL, *free)
    state_file = project / ".tuneops" / "stack.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield Stack(project, state["environment"], state["services"])
    finally:
        stopped = tuneops(project, "down")
        print(stopped.stdout, stopped.stderr)
        databases = [
            u.rsplit("/", 1)[1] for k, u in state.get("environment", {}).items() if k.endswith("DB_URL")
        ]
        from tuneops.stack import StackConfig

        config = StackConfig(project, project / ".tuneops", project / "tuneops.yaml", "x", 0)
        _drop_databases([*databases, config.database("mlflow"), config.database("prefect")])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module. Playwright's sync API keeps an event loop running in this
    thread while it is open, so every later ``asyncio.run()`` in the session (Prefect, the
    evaluation stage) would fail: it must not outlive the browser tests."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run scripts/setup (as root) or apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh browser page; on failure its screenshot is saved under tmp_path (path printed)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    try:
        yield opened
    finally:
        if request.node.stash.get(_FAILED, False):
            shot = tmp_path / "failure.png"
            opened.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot of the failing page: {shot}")
        context.close()
