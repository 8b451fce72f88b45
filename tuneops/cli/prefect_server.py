"""The project's own Prefect API server for the length of one CLI run.

Prefect runs a flow with no ``PREFECT_API_URL`` by starting a temporary server on first use
(its "ephemeral" mode). That server only starts once the flow module is imported and only gets
going after the caller has imported Prefect's server package too, so a run pays the two start-ups
one after the other. Here the same server (the same uvicorn command and environment Prefect
uses for its temporary server) starts before anything heavy is imported, and boots while the
CLI imports the flow and the local tuning service loads its model; ``PREFECT_API_URL`` then
points the flow at it. Its database lives under ``<project>/.tuneops/prefect`` as before and a
new one starts from the machine's migrated template (:mod:`tuneops.state_templates`).

A ``PREFECT_API_URL`` the user set is left alone: the flow runs against their server.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from tuneops.errors import ServiceError
from tuneops.processes import ManagedProcess, free_port, spawn_process, wait_until_healthy
from tuneops.state_templates import PREFECT, save_template, seed_database

STARTUP_TIMEOUT_S = 120.0
_DATABASE_URL_VARIABLES = ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")


class ProjectPrefectServer:
    """A started (maybe not yet healthy) server; :meth:`wait_ready` before running flows."""

    def __init__(self, managed: ManagedProcess, database: Path | None, seeded: bool) -> None:
        self.managed = managed
        self.api_url = managed.url
        self._database = database
        self._seeded = seeded
        self._ready = False

    def wait_ready(self) -> None:
        """Block until the API answers; keep a template of a database this run created."""
        if self._ready:
            return
        try:
            wait_until_healthy(self.managed, f"{self.api_url}/health", STARTUP_TIMEOUT_S)
        except ServiceError as exc:
            raise ServiceError(
                f"the project's Prefect server did not start (log: {self.managed.log_path})",
                hint="try the command again; if it fails again, that log says why",
            ) from exc
        self._ready = True
        if self._database is not None and not self._seeded:
            save_template(PREFECT, self._database)


def project_prefect_home(state_home: Path) -> Path:
    """The Prefect home in use: the user's ``PREFECT_HOME``, else ``<project>/.tuneops/prefect``."""
    return Path(os.environ.get("PREFECT_HOME") or state_home / "prefect")


@contextlib.contextmanager
def project_prefect_server(prefect_home: Path) -> Iterator[ProjectPrefectServer | None]:
    """Run the project's Prefect server for the block (None when the user configured a server).

    Call before Prefect is imported: ``PREFECT_API_URL`` is read when its settings load.
    """
    if os.environ.get("PREFECT_API_URL") or "prefect" in sys.modules:
        yield None
        return
    own_database = not any(os.environ.get(v) for v in _DATABASE_URL_VARIABLES)
    database = prefect_home / "prefect.db" if own_database else None
    seeded = database is not None and seed_database(PREFECT, database)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        "PREFECT_HOME": str(prefect_home),
        # what Prefect sets for its own temporary server: no UI, the ephemeral set of services
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    if seeded:  # the template is at this Prefect version's head, with block types registered
        env["PREFECT_API_DATABASE_MIGRATE_ON_START"] = "false"
        env["PREFECT_API_BLOCKS_REGISTER_ON_START"] = "false"
    managed = spawn_process(
        "Prefect server",
        [sys.executable, "-m", "uvicorn", "--app-dir", _prefect_parent(), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "error", "--lifespan", "on"],
        url=api_url,
        log_path=prefect_home / "server.log",
        env=env,
    )  # fmt: skip
    # The flow reaches it through PREFECT_API_URL; this server has no UI (like Prefect's own
    # temporary one), so Prefect must not print "View at" links to it.
    overrides = {"PREFECT_API_URL": api_url, "PREFECT_UI_URL": ""}
    previous = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield ProjectPrefectServer(managed, database, seeded)
    finally:
        _drain_prefect_workers()
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        managed.stop(timeout=5.0)


def _prefect_parent() -> str:
    """The folder holding the ``prefect`` package (uvicorn's --app-dir), found without importing it."""
    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("Prefect is not installed", hint="pip install -e '.[local,dev]'")
    return str(Path(next(iter(spec.submodule_search_locations))).parent)


def _drain_prefect_workers() -> None:
    """Send the run's last logs and events while the server is still up."""
    if "prefect" not in sys.modules:
        return
    with contextlib.suppress(Exception):
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
        EventsWorker.drain_all(timeout=5)
