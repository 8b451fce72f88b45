"""``tuneops monitor``: one drift check now, as the ``monitor-drift`` deployment runs it.

Prints the verdict with every signal (or the whole check as JSON with ``--json``), logs the
report to MLflow and, on a drifted verdict, emits ``tuneops.drift.detected`` (``--no-emit`` to
only look). Exit code 0 whatever the verdict: drift is a finding, not an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tuneops.cli.common import DEFAULT_SPEC, SpecOption, console, load_project, one_line_errors


def monitor_command(
    spec: SpecOption = DEFAULT_SPEC,
    as_json: Annotated[bool, typer.Option("--json", help="Print the check as JSON.")] = False,
    emit: Annotated[
        bool, typer.Option("--emit/--no-emit", help="Emit tuneops.drift.detected on a drifted verdict.")
    ] = True,
) -> None:
    """Check the champion's served traffic for drift against its training data, now."""
    project = load_project(spec)
    from tuneops.cli.common import use_project_prefect_home
    from tuneops.cli.prefect_server import project_prefect_home, project_prefect_server

    use_project_prefect_home(project.settings)
    with (
        project_prefect_server(project_prefect_home(project.settings.state_home)) as server,
        one_line_errors(),
    ):
        if server is not None:
            server.wait_ready()
        from tuneops.flows.monitor import monitor_drift

        outcome = monitor_drift(spec_path=str(Path(spec).resolve()), emit=emit)
    if as_json:
        typer.echo(json.dumps(outcome.to_dict(), indent=2))
        return
    verdict = outcome.check.verdict
    colour = {"drifted": "red", "no_drift": "green", "insufficient_traffic": "yellow"}[verdict.status]
    console.print(f"[{colour}]{verdict.status.replace('_', ' ')}[/{colour}]: {escape(verdict.summary())}")
    for signal in verdict.signals:
        mark = "[red]DRIFT[/red]" if signal.drifted else ("ok   " if signal.measured else "[dim]n/a[/dim]  ")
        console.print(f"  {mark} {escape(signal.message)}")
    for note in outcome.check.notes:
        console.print(f"  [dim]note: {escape(note)}[/dim]")
    if outcome.report_run_id:
        console.print(f"MLflow run: {escape(outcome.report_run_id)} (drift/report.md, drift/signals.png)")
    if outcome.emitted:
        console.print(f"emitted tuneops.drift.detected: {escape(outcome.event_summary or '')}")


def register(app: typer.Typer) -> None:
    """Add ``tuneops monitor`` to the root app."""
    app.command("monitor")(monitor_command)
