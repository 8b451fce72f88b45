"""The at-scale stack on one machine: the servers ``tuneops up`` starts, watches and stops.

MLflow tracking server (PostgreSQL backend, artifacts proxied to S3), Prefect server (PostgreSQL,
UI on), a process worker for the project's pool, the local service and the gateway, plus moto's
S3 server when no S3 endpoint is given. Each runs in its own session through
:mod:`tuneops.processes`, logs to ``.tuneops/logs/<service>.log`` and is recorded (pid, start
time, port, URL) in ``.tuneops/stack.json``, so ``status`` and ``down`` work from any later
command. ``up`` on a healthy stack changes nothing; a service that died is started again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from tuneops.errors import ServiceError
from tuneops.processes import ManagedProcess, free_port, spawn_process, url_answers, wait_until_healthy
from tuneops.settings import QUIET_ENVIRONMENT

DEFAULT_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
SERVICES = ("s3", "mlflow", "prefect", "models", "worker", "gateway")
STARTUP_TIMEOUT_S = 240.0
Health = Literal["running", "unhealthy", "stopped"]


@dataclass(frozen=True)
class StackConfig:
    """Where the stack's servers listen and which stores they use.

    Ports left at 0 are picked free when a service starts; a running service keeps its port.
    ``s3_endpoint`` None starts moto's S3 server (development); give a real endpoint otherwise.
    """

    project_dir: Path
    home: Path
    spec_path: Path
    work_pool: str
    models_port: int
    postgres_url: str = DEFAULT_POSTGRES
    s3_endpoint: str | None = None
    bucket: str = "tuneops"
    host: str = "127.0.0.1"
    ports: Mapping[str, int] = field(default_factory=dict)

    @property
    def state_path(self) -> Path:
        return self.home / "stack.json"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    def database(self, part: str) -> str:
        """A database name per project and part, stable across runs (``tuneops_<dir>_<hash>_<part>``)."""
        slug = re.sub(r"[^a-z0-9]+", "_", self.project_dir.name.lower()).strip("_")[:20] or "project"
        digest = hashlib.sha256(str(self.project_dir.resolve()).encode()).hexdigest()[:6]
        return f"tuneops_{slug}_{digest}_{part}"

    def database_url(self, part: str, driver: str = "psycopg2") -> str:
        server = self.postgres_url.split("://", 1)[1].rsplit("/", 1)[0]
        return f"postgresql+{driver}://{server}/{self.database(part)}"


@dataclass
class ServiceRecord:
    """What the state file keeps about one running service."""

    name: str
    pid: int
    started: str | None  # /proc start time, so a reused pid is not mistaken for the service
    port: int
    url: str
    health_url: str
    log: str

    def health(self) -> Health:
        if not _alive(self.pid, self.started):
            return "stopped"
        return "running" if url_answers(self.health_url) else "unhealthy"


@dataclass
class StackState:
    """``.tuneops/stack.json``: the services, their ports, and the settings clients need."""

    services: dict[str, ServiceRecord] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> StackState:
        if not path.is_file():
            return cls()
        raw = json.loads(path.read_text())
        services = {k: ServiceRecord(**v) for k, v in raw.get("services", {}).items()}
        return cls(services=services, ports=raw.get("ports", {}), environment=raw.get("environment", {}))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "services": {k: asdict(v) for k, v in self.services.items()},
            "ports": self.ports,
            "environment": self.environment,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(path)


@dataclass(frozen=True)
class ServicePlan:
    """How to start one service: its command, extra environment and health URL."""

    name: str
    command: list[str]
    url: str
    health_url: str
    env: dict[str, str | None] = field(default_factory=dict)
    group: bool = True


def _proc_start(pid: int) -> str | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]  # state, then starttime (field 22)


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path("/proc").is_dir():  # no procfs (macOS): the pid is all we have
        return True
    return _proc_start(pid) is not None and (started is None or _proc_start(pid) == started)


def _terminate(record: ServiceRecord, timeout: float = 30.0) -> None:
    """SIGTERM the service's process group, SIGKILL it after ``timeout``.

    The service may belong to an earlier ``tuneops up`` (not our child), so this waits on the pid
    rather than on a Popen.
    """
    for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        if not _alive(record.pid, record.started):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, sig)
        deadline = time.monotonic() + grace
        while _alive(record.pid, record.started) and time.monotonic() < deadline:
            time.sleep(0.1)


def stack_environment(config: StackConfig, ports: Mapping[str, int]) -> dict[str, str]:
    """The settings every service (and a client shell) uses to reach the stack."""
    s3 = config.s3_endpoint or f"http://{config.host}:{ports['s3']}"
    return {
        "TUNEOPS_TRACKING_URI": f"http://{config.host}:{ports['mlflow']}",
        "TUNEOPS_STATE_DB_URL": config.database_url("state"),
        "TUNEOPS_DATA_STORE_URI": f"s3://{config.bucket}/datasets",
        "TUNEOPS_S3_ENDPOINT_URL": s3,
        "TUNEOPS_MLFLOW_UI_URL": f"http://{config.host}:{ports['mlflow']}",
        "TUNEOPS_PREFECT_UI_URL": f"http://{config.host}:{ports['prefect']}",
        "MLFLOW_S3_ENDPOINT_URL": s3,
        "PREFECT_API_URL": f"http://{config.host}:{ports['prefect']}/api",
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "tuneops"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "tuneops-secret"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }


def plan_services(config: StackConfig, ports: Mapping[str, int]) -> list[ServicePlan]:
    """Every service of the stack in start order."""
    host, py = config.host, sys.executable
    url = {name: f"http://{host}:{port}" for name, port in ports.items()}
    spec = str(config.spec_path)
    plans = []
    if config.s3_endpoint is None:
        plans.append(
            ServicePlan("s3", [py, "-m", "moto.server", "-H", host, "-p", str(ports["s3"])], url["s3"],
                        f"{url['s3']}/")
        )  # fmt: skip
    plans += [
        ServicePlan(
            "mlflow",
            [py, "-m", "mlflow", "server", "--host", host, "--port", str(ports["mlflow"]), "--workers", "1",
             "--backend-store-uri", config.database_url("mlflow"),
             "--artifacts-destination", f"s3://{config.bucket}/mlflow"],
            url["mlflow"], f"{url['mlflow']}/health",
        ),
        ServicePlan(
            "prefect",
            [py, "-m", "prefect", "server", "start", "--host", host, "--port", str(ports["prefect"])],
            url["prefect"], f"{url['prefect']}/api/health",
            env={
                "PREFECT_HOME": str(config.home / "stack" / "prefect"),
                "PREFECT_API_DATABASE_CONNECTION_URL": config.database_url("prefect", "asyncpg"),
                "PREFECT_UI_ENABLED": "true",
                "PREFECT_UI_API_URL": f"{url['prefect']}/api",
            },
        ),
        ServicePlan(
            "models",
            [py, "-m", "tuneops.cli.main", "serve", "models", "--spec", spec, "--host", host,
             "--port", str(config.models_port)],
            f"http://{host}:{config.models_port}/v1", f"http://{host}:{config.models_port}/health",
            group=False,
        ),
        ServicePlan(
            "worker",
            [py, "-m", "prefect", "worker", "start", "--pool", config.work_pool, "--type", "process",
             "--with-healthcheck"],
            url["worker"], f"{url['worker']}/health",
            env={
                "PREFECT_HOME": str(config.home / "stack" / "prefect"),
                "PREFECT_WORKER_WEBSERVER_HOST": host,
                "PREFECT_WORKER_WEBSERVER_PORT": str(ports["worker"]),
            },
        ),
        ServicePlan(
            "gateway",
            [py, "-m", "tuneops.cli.main", "serve", "gateway", "--spec", spec, "--host", host,
             "--port", str(ports["gateway"]), "--no-local-service"],  # the stack runs "models" itself
            f"{url['gateway']}/v1", f"{url['gateway']}/health",
        ),
    ]  # fmt: skip
    return plans


def ensure_databases(config: StackConfig) -> None:
    """Create the stack's three PostgreSQL databases if they are missing."""
    import sqlalchemy as sa

    engine = sa.create_engine(config.postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for part in ("mlflow", "prefect", "state"):
                name = config.database(part)
                found = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
                if found.first() is None:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        raise ServiceError(
            f"PostgreSQL does not answer at {config.postgres_url}: {exc.orig}",
            hint="start it (scripts/setup --with-postgres) or pass --postgres URL",
        ) from exc
    finally:
        engine.dispose()


def ensure_bucket(endpoint: str, bucket: str, env: Mapping[str, str]) -> None:
    """Create ``bucket`` on the S3 endpoint if it is missing."""
    import boto3
    import botocore.exceptions

    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"],
    )  # fmt: skip
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError:
        client.create_bucket(Bucket=bucket)


@dataclass
class UpResult:
    """What ``up`` did: the services it started (empty: the stack was already running)."""

    started: list[str]
    state: StackState
    processes: dict[str, ManagedProcess]


def _ports(config: StackConfig, state: StackState) -> dict[str, int]:
    """A recorded service keeps its port (clients hold its URL); the others take the configured
    port, else a free one."""
    ports = {
        name: state.ports[name] if name in state.services and name in state.ports
        else config.ports.get(name) or free_port()
        for name in SERVICES
    }  # fmt: skip
    ports["models"] = config.models_port
    return ports


def up(config: StackConfig, say: Callable[[str], None] = lambda _m: None) -> UpResult:
    """Start every service that is not running and healthy; wait for each on its health URL.

    A service that answers is left alone, one that died (or hangs) is stopped and started again.
    """
    state = StackState.load(config.state_path)
    ports = _ports(config, state)
    env = stack_environment(config, ports)
    state.ports, state.environment = ports, env
    ensure_databases(config)
    child_env: dict[str, str | None] = {**QUIET_ENVIRONMENT, **env, "MLFLOW_TRACKING_URI": None}
    started: list[str] = []
    processes: dict[str, ManagedProcess] = {}
    for plan in plan_services(config, ports):
        record = state.services.get(plan.name)
        if record is not None:
            health = record.health()
            if health == "running":
                continue
            say(f"{plan.name}: {health}, restarting")
            _terminate(record, timeout=10)
        log = config.log_dir / f"{plan.name}.log"
        managed = spawn_process(
            plan.name, plan.command, url=plan.url, log_path=log, env={**child_env, **plan.env},
            append_log=True, group=plan.group,
        )  # fmt: skip
        state.services[plan.name] = ServiceRecord(
            plan.name, managed.process.pid, _proc_start(managed.process.pid), ports.get(plan.name, 0),
            plan.url, plan.health_url, str(log),
        )  # fmt: skip
        state.save(config.state_path)
        say(f"{plan.name}: starting (log {log})")
        wait_until_healthy(managed, plan.health_url, STARTUP_TIMEOUT_S)
        if plan.name == "s3" or (plan.name == "mlflow" and config.s3_endpoint is not None):
            ensure_bucket(env["TUNEOPS_S3_ENDPOINT_URL"], config.bucket, env)
        processes[plan.name] = managed
        started.append(plan.name)
    state.save(config.state_path)
    return UpResult(started, state, processes)


def status(config: StackConfig) -> dict[str, tuple[ServiceRecord, Health]]:
    """Each recorded service and whether it runs and answers its health URL."""
    state = StackState.load(config.state_path)
    return {name: (record, record.health()) for name, record in state.services.items()}


def down(config: StackConfig, say: Callable[[str], None] = lambda _m: None) -> list[str]:
    """Stop every recorded service, last started first; forget them. Databases and data stay."""
    state = StackState.load(config.state_path)
    stopped = []
    for name in reversed(list(state.services)):
        record = state.services[name]
        if _alive(record.pid, record.started):
            say(f"{name}: stopping")
            _terminate(record)
            stopped.append(name)
        del state.services[name]
        state.save(config.state_path)
    return stopped


def supervise(config: StackConfig, stop: Callable[[float], bool], say: Callable[[str], None]) -> None:
    """Keep the stack up until ``stop(interval)`` returns True, starting again what died."""
    while not stop(5.0):
        crashed = [name for name, (_r, health) in status(config).items() if health == "stopped"]
        if crashed:
            say(f"{', '.join(crashed)} stopped: starting again")
            up(config, say)


def client_exports(state: StackState) -> str:
    """``export`` lines that point a shell's tuneops, Prefect and MLflow clients at the stack."""
    return "\n".join(f"export {k}={v}" for k, v in state.environment.items() if v)
