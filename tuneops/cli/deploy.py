"""``tuneops deploy``: register the project's deployments on the Prefect server in ``PREFECT_API_URL``.

``retrain`` (cron from ``schedule:`` + the drift trigger for exactly this model), ``monitor-drift``
(every ``monitoring.interval_minutes``) and ``rollout`` (on ``tuneops.model.registered``, when
``schedule.rollout_on_registered``). Creates the process work pool if missing and prints how to
start a worker. ``--print-yaml`` prints the same definitions as a ``prefect.yaml`` instead.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tuneops.cli.common import DEFAULT_SPEC, SpecOption, console, load_project, one_line_errors
from tuneops.errors import UsageError


def deploy_command(
    spec: SpecOption = DEFAULT_SPEC,
    print_yaml: Annotated[
        bool, typer.Option("--print-yaml", help="Print the deployments as prefect.yaml; register nothing.")
    ] = False,
    worker_hint: Annotated[
        bool, typer.Option("--worker-hint/--no-worker-hint", hidden=True, help="Say how to start a worker.")
    ] = True,
) -> None:
    """Register retrain / monitor-drift / rollout deployments for this project on the Prefect server."""
    project = load_project(spec)
    from tuneops.flows.deployments import apply_deployments, render_prefect_yaml, rollout_skipped

    if print_yaml:
        typer.echo(render_prefect_yaml(project.spec), nl=False)
        return
    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        raise UsageError(
            "PREFECT_API_URL is not set: deployments live on a Prefect server",
            hint="start one (prefect server start) and export PREFECT_API_URL=http://127.0.0.1:4200/api",
        )
    with one_line_errors():
        applied, created_pool = asyncio.run(apply_deployments(project.spec, Path(spec)))
    pool = project.spec.schedule.work_pool
    console.print(f"Deployments on {escape(api_url)}:")
    for deployment in applied:
        console.print(f"  [bold]{escape(deployment.name)}[/bold]")
        for schedule in deployment.schedules:
            console.print(f"    schedule: {escape(schedule)}")
        for trigger in deployment.triggers:
            console.print(f"    trigger:  {escape(trigger)}")
    skipped = rollout_skipped(project.spec)
    if skipped:
        console.print(f"[yellow]note:[/yellow] {escape(skipped)}")
    console.print(f"Work pool {escape(pool)} ({'created' if created_pool else 'exists'}, type process).")
    if worker_hint:
        console.print("Start a worker (same PREFECT_API_URL, tuneops installed):")
        console.print(f"  prefect worker start --pool {escape(pool)}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``tuneops deploy`` to the root app."""
    app.command("deploy")(deploy_command)
