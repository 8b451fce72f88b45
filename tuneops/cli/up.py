"""``tuneops up`` / ``tuneops status`` / ``tuneops down``: the at-scale stack on one machine.

The servers a team runs (MLflow on PostgreSQL with S3 artifacts, a Prefect server on PostgreSQL
with its UI, a process worker, the local service, the gateway) as supervised processes; the
work is :mod:`tuneops.stack`'s, this module only parses options and prints.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer
from rich.markup import escape

from tuneops.cli.common import DEFAULT_SPEC, SpecOption, console, err_console, settings_for
from tuneops.errors import TuneopsError, UsageError
from tuneops.settings import DEFAULT_GATEWAY_PORT

if TYPE_CHECKING:
    from tuneops.stack import StackConfig, StackState

PortOption = Annotated[
    int, typer.Option(min=0, max=65535, help="0: a free port. A running service keeps its port.")
]


def _config(
    spec: Path,
    postgres: str,
    s3_endpoint: str | None,
    ports: dict[str, int],
) -> StackConfig:
    from tuneops.spec import load_spec
    from tuneops.stack import StackConfig

    spec_path = Path(spec).resolve()
    if not spec_path.is_file():
        raise UsageError(f"no spec at {spec}", hint="run in a project folder, or pass --spec")
    loaded, directory = load_spec(spec_path)
    models_port = 8765
    if loaded.provider.kind == "local":
        models_port = urlsplit(str(loaded.provider.base_url)).port or 80
    return StackConfig(
        project_dir=directory, home=settings_for(spec_path).state_home, spec_path=spec_path,
        work_pool=loaded.schedule.work_pool, models_port=models_port, postgres_url=postgres,
        s3_endpoint=s3_endpoint, ports={k: v for k, v in ports.items() if v},
    )  # fmt: skip


def _say(message: str) -> None:
    err_console.print(f"[dim]{escape(message)}[/dim]")


def _deploy(config: StackConfig, environment: dict[str, str]) -> None:
    """Run ``tuneops deploy`` against the stack's Prefect server, if this tuneops has it."""
    if importlib.util.find_spec("tuneops.cli.deploy") is None:
        err_console.print("[yellow]tuneops deploy is not available: no deployments registered[/yellow]")
        return
    env = {**os.environ, **environment}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(
        [sys.executable, "-m", "tuneops.cli.main", "deploy", "--spec", str(config.spec_path),
         "--no-worker-hint"],
        cwd=config.project_dir, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if result.returncode != 0:
        err_console.print(f"[red]tuneops deploy failed:[/red] {escape(result.stderr.strip()[-2000:])}")
        raise typer.Exit(1)
    console.print(result.stdout.rstrip())


def _print_urls(state: StackState) -> None:
    env = state.environment
    rows = [
        ("MLflow UI + API", env.get("TUNEOPS_TRACKING_URI")),
        ("Prefect UI", env.get("TUNEOPS_PREFECT_UI_URL")),
        ("Prefect API", env.get("PREFECT_API_URL")),
        ("gateway (OpenAI API)", state.services["gateway"].url if "gateway" in state.services else None),
        ("local service", state.services["models"].url if "models" in state.services else None),
        ("S3", env.get("TUNEOPS_S3_ENDPOINT_URL")),
    ]
    for label, url in rows:
        if url:
            console.print(f"  {label:<22} {escape(url)}", soft_wrap=True)
    console.print('Point this shell at the stack: [bold]eval "$(tuneops status --env)"[/bold]')


def up_command(
    spec: SpecOption = DEFAULT_SPEC,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Start and return; stop with tuneops down.")
    ] = False,
    postgres: Annotated[
        str, typer.Option(help="PostgreSQL server where the stack's databases are made.")
    ] = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
    s3_endpoint: Annotated[
        str | None, typer.Option(help="S3 endpoint for datasets and artifacts (default: moto's server).")
    ] = None,
    mlflow_port: PortOption = 5000,
    prefect_port: PortOption = 4200,
    gateway_port: PortOption = DEFAULT_GATEWAY_PORT,
    s3_port: PortOption = 0,
    worker_port: PortOption = 0,
) -> None:
    """Start the at-scale stack for this project: MLflow and Prefect servers on PostgreSQL, S3,
    a process worker, the local service and the gateway; then register the deployments.

    Logs: .tuneops/logs/<service>.log. A second up leaves running services alone and starts again
    any that died. Without --detach, up supervises the stack until Ctrl-C, then stops it.
    """
    from tuneops.stack import down, supervise, up

    ports = {"mlflow": mlflow_port, "prefect": prefect_port, "gateway": gateway_port, "s3": s3_port,
             "worker": worker_port}  # fmt: skip
    config = _config(spec, postgres, s3_endpoint, ports)
    try:
        result = up(config, _say)
    except TuneopsError:
        if not detach:
            down(config, _say)
        raise
    if result.started:
        console.print(f"Started: {', '.join(result.started)}.")
        _deploy(config, result.state.environment)
    else:
        console.print("The stack is already running.")
    _print_urls(result.state)
    if detach:
        console.print("Stop it with: tuneops down")
        return
    stopping = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        console.print("Supervising; Ctrl-C stops the stack.")
        supervise(config, stopping.wait, _say)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        down(config, _say)
        console.print("Stack stopped.")


def status_command(
    spec: SpecOption = DEFAULT_SPEC,
    env: Annotated[bool, typer.Option("--env", help="Print export lines for the stack's settings.")] = False,
) -> None:
    """Show each service of the stack: running, unhealthy (alive, not answering) or stopped.

    Exits 1 when any recorded service is not running.
    """
    from tuneops.stack import StackState, status

    config = _config(spec, "", None, {})
    if env:
        from tuneops.stack import client_exports

        typer.echo(client_exports(StackState.load(config.state_path)))
        return
    services = status(config)
    if not services:
        console.print("No stack is running for this project (tuneops up starts one).")
        raise typer.Exit(1)
    colours = {"running": "green", "unhealthy": "yellow", "stopped": "red"}
    for name, (record, health) in services.items():
        console.print(
            f"  {name:<8} [{colours[health]}]{health:<9}[/{colours[health]}] pid {record.pid:<7} "
            f"{escape(record.url)}  log {escape(record.log)}",
            soft_wrap=True,
        )
    if any(health != "running" for _record, health in services.values()):
        console.print("Start what stopped again with: tuneops up --detach")
        raise typer.Exit(1)


def down_command(spec: SpecOption = DEFAULT_SPEC) -> None:
    """Stop the stack's services (databases, buckets and logs stay)."""
    from tuneops.stack import down

    stopped = down(_config(spec, "", None, {}), _say)
    console.print(f"Stopped: {', '.join(stopped)}." if stopped else "Nothing was running.")


def register(app: typer.Typer) -> None:
    """Add ``tuneops up``, ``tuneops status`` and ``tuneops down`` to the root app."""
    app.command("up")(up_command)
    app.command("status")(status_command)
    app.command("down")(down_command)
