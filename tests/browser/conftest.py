"""One ``tuneops up`` stack for every browser test, and a headless Chromium to look at it.

The stack is what a user starts: ``tuneops up --detach`` in a project folder (MLflow on
PostgreSQL with artifacts on moto's S3 server, Prefect server with its UI, a process worker, the
local service on the seconds-sized model, the gateway), stopped with ``tuneops down`` (checked:
every service's process gone) and its databases dropped at the end. Commands reach the stack the
way a user's shell does, through ``eval "$(tuneops status --env)"`` (:func:`client_environment`).
The browser is Debian's ``chromium`` driven by playwright (nothing is downloaded); a failing test
leaves a screenshot of its page under its tmp_path (kept by pytest) and prints where.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import POSTGRES_ADMIN_URL
from tuneops.processes import free_port
from tuneops.serving.local.testing import as_jsonl, claims_chat_examples
from tuneops.settings import QUIET_ENVIRONMENT
from tuneops.stack import SERVICES

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


def _cli_environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    """A user's shell: no stack settings unless ``extra`` brings them; wide lines, no wrapping."""
    env = {**os.environ, **QUIET_ENVIRONMENT, "TUNEOPS_TINY_PROFILE": "test", "COLUMNS": "200"}
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME"):
        env.pop(key, None)
    return {**env, **(extra or {})}


def tuneops(
    project: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the tuneops CLI in ``project`` as a user would (a fresh process; ``env`` added)."""
    return subprocess.run(
        [sys.executable, "-m", "tuneops.cli.main", *args], cwd=project, env=_cli_environment(env),
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def tuneops_in_background(project: Path, *args: str, env: Mapping[str, str]) -> subprocess.Popen[str]:
    """Start a long tuneops command (``rollout start``); output merged into its stdout."""
    return subprocess.Popen(
        [sys.executable, "-m", "tuneops.cli.main", *args], cwd=project, env=_cli_environment(env),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def client_environment(project: Path) -> dict[str, str]:
    """What ``eval "$(tuneops status --env)"`` puts into a shell, as a dict."""
    printed = tuneops(project, "status", "--env")
    assert printed.returncode == 0, printed.stdout + printed.stderr
    pairs = (line.removeprefix("export ").split("=", 1) for line in printed.stdout.splitlines() if line)
    return dict(pairs)


def write_project(root: Path) -> Path:
    """A project the stack can really train, register and roll out in seconds.

    Claims data the test-profile base model fine-tunes on in ~10 s; a format-only evaluation
    without gates (what a gate decides is tested in tests/flows; here the pipeline's plumbing
    between servers is); a canary whose only step is the promotion, behind ``approval:
    required``, so a rollout goes straight to the approval a person gives in the Prefect UI.
    """
    root.mkdir(parents=True)
    write_training_data(root, claims_chat_examples(60, seed=11))
    (root / "tuneops.yaml").write_text(
        f"model: {{name: {MODEL}, base_model: tuneops-tiny}}\n"
        f"provider: {{kind: local, base_url: 'http://127.0.0.1:{free_port()}/v1'}}\n"
        "data: {name: claims, train: data/train.jsonl, validation: data/validation.jsonl, "
        "test: data/test.jsonl}\n"
        "finetune: {seed: 7, hyperparameters: {n_epochs: 1}}\n"
        "evaluation: {metrics: [format], gates: [], max_tokens: 16, bootstrap_resamples: 100}\n"
        "serving: {refresh_seconds: 0.5}\n"
        "schedule: {retrain_cron: '0 3 * * 1', retrain_on_drift: true, monitor: true}\n"
        "rollout: {strategy: canary, steps: [100], approval: required, approval_timeout_seconds: 600}\n"
    )
    return root


def write_training_data(root: Path, rows: list[dict[str, Any]]) -> None:
    """Train / validation / test splits of ``rows`` (2:1:1 of the last 20) under ``root/data``."""
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "train.jsonl").write_bytes(as_jsonl(rows[:-20]))
    (root / "data" / "validation.jsonl").write_bytes(as_jsonl(rows[-20:-10]))
    (root / "data" / "test.jsonl").write_bytes(as_jsonl(rows[-10:]))


def recorded_pids(project: Path) -> dict[str, int]:
    """The pid of every service ``.tuneops/stack.json`` records, by name."""
    state = json.loads((project / ".tuneops" / "stack.json").read_text())
    return {name: int(record["pid"]) for name, record in state["services"].items()}


def is_running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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
    """``tuneops up --detach`` on free ports; ``tuneops down`` after, checked to stop every
    service, and the databases dropped."""
    project = write_project(tmp_path_factory.mktemp("stack") / "project")
    free = ("--mlflow-port", "0", "--prefect-port", "0", "--gateway-port", "0")
    started = tuneops(project, "up", "--detach", "--postgres", POSTGRES_ADMIN_URL, *free)
    state_file = project / ".tuneops" / "stack.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        assert f"Started: {', '.join(SERVICES)}." in started.stdout
        assert f"retrain/retrain-{MODEL}" in started.stdout  # tuneops deploy ran against the stack
        yield Stack(project, state["environment"], state["services"])
    finally:
        before = recorded_pids(project) if state_file.is_file() else {}
        stopped = tuneops(project, "down")
        print(stopped.stdout, stopped.stderr)
        left = [name for name, pid in before.items() if is_running(pid)]
        databases = [
            u.rsplit("/", 1)[1] for k, u in state.get("environment", {}).items() if k.endswith("DB_URL")
        ]
        from tuneops.stack import StackConfig

        config = StackConfig(project, project / ".tuneops", project / "tuneops.yaml", "x", 0)
        _drop_databases([*databases, config.database("mlflow"), config.database("prefect")])
    if started.returncode == 0:  # the chain's last step: tuneops down stops what up started
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert set(before) == set(SERVICES) and not left, f"recorded {before}, still running: {left}"
        assert "No stack is running" in tuneops(project, "status").stdout


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
