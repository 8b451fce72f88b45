"""``tuneops run``: the whole retrain flow on the spec, with a summary of what happened.

On the embedded default it starts the local tuning service for the duration of the run when
nothing answers at the spec's address, runs the project's Prefect server (state under the
project's ``.tuneops/prefect``) for the run, and ends with where to look: MLflow UI and Prefect
UI commands.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tuneops.cli.common import (
    DEFAULT_SPEC,
    Project,
    SpecOption,
    console,
    flow_session,
    load_project,
)

if TYPE_CHECKING:
    from tuneops.flows.retrain_steps import RetrainOutcome
    from tuneops.settings import TuneopsSettings


def register(app: typer.Typer) -> None:
    """Add ``tuneops run``."""
    app.command("run")(run)


def run(
    spec: SpecOption = DEFAULT_SPEC,
    reason: Annotated[
        str, typer.Option(help="Why this run happens; recorded with the evaluation.")
    ] = "manual",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Draw progress bars.")] = True,
) -> None:
    """Run the whole pipeline: version data → fine-tune → evaluate vs base (+champion) → gate → register.

    Re-running with unchanged data and spec trains nothing and registers nothing new; a run
    killed at any point picks up where it stopped.
    """
    project = load_project(spec)
    started = time.monotonic()
    with flow_session(project, warm_up=lambda: _warm_up(project)):
        from tuneops.flows.retrain import retrain

        outcome = retrain(spec_path=str(Path(spec).resolve()), reason=reason, show_progress=progress)
    _print_summary(project, outcome, time.monotonic() - started)


def _warm_up(project: Project) -> threading.Thread:
    """Import the flow and open the MLflow store while the local service and the Prefect server
    start (each takes seconds: heavy imports, MLflow's schema on a new store).

    All imports happen in this one thread, so no two threads import the same packages at once.
    Whatever fails here is simply done again, as usual, by the flow.
    """

    def warm() -> None:
        with contextlib.suppress(Exception):
            import prefect.flow_engine  # imported on a flow's first call otherwise
            import prefect.task_engine  # noqa: F401

            import tuneops.flows.retrain  # noqa: F401  (prefect, mlflow, the stages)
        with contextlib.suppress(Exception):
            from tuneops.registry.mlflow_store import open_mlflow_store

            open_mlflow_store(project.settings.tracking_uri or "")

    import tuneops.serving.local.launcher  # noqa: F401  (before the thread: no concurrent imports)

    thread = threading.Thread(target=warm, name="warm-up", daemon=True)
    thread.start()
    return thread


def _print_summary(project: Project, outcome: RetrainOutcome, seconds: float) -> None:
    from rich.markdown import Markdown
    from rich.table import Table

    settings = project.settings
    version = outcome.registered
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("dataset", f"{outcome.dataset.ref}" + (" (new version)" if outcome.dataset.created else ""))
    table.add_row("fine-tune", f"{outcome.job.id} on {outcome.job.model} → {outcome.job.endpoint_model}")
    if outcome.job.trained_tokens:
        table.add_row("trained tokens", f"{outcome.job.trained_tokens:,}")
    gate = "[green]passed[/green]" if outcome.gate_passed else "[red]failed[/red]"
    table.add_row("gate", gate)
    registered = "registered now" if version.created else "already registered"
    table.add_row("registry", f"{version.model_name} version {version.version} ({registered})")
    if outcome.challenger_set:
        table.add_row("alias", f"challenger → version {version.version}")
    table.add_row("took", f"{seconds:.0f} s")
    console.rule("tuneops run")
    console.print(table)
    if outcome.evaluation is not None:
        console.print(Markdown(outcome.evaluation.markdown))
    for reason in outcome.gate_reasons:
        console.print(f"  • {reason}", soft_wrap=True)
    for note in outcome.notes:
        console.print(f"[dim]{note}[/dim]")
    console.print()
    console.print("Where to look:")
    mlflow_ui, prefect_ui = ui_addresses(settings)
    console.print(f"  MLflow UI:  {mlflow_ui}", soft_wrap=True)
    console.print(f"  Prefect UI: {prefect_ui}", soft_wrap=True)
    console.print(f"  Lineage:    tuneops lineage {version.model_name}/{version.version}", soft_wrap=True)


def ui_addresses(settings: TuneopsSettings) -> tuple[str, str]:
    """Where the MLflow and Prefect UIs of this project are: the servers' addresses when the project
    runs on servers (``tuneops up`` or your own), else the command that opens the embedded store."""
    tracking = settings.tracking_uri or ""
    if settings.mlflow_ui_url:
        mlflow_ui = settings.mlflow_ui_url
    elif tracking.startswith(("http://", "https://")):
        mlflow_ui = tracking
    else:
        mlflow_ui = f"mlflow ui --backend-store-uri {tracking}"
    api = os.environ.get("PREFECT_API_URL", "")
    if settings.prefect_ui_url:
        prefect_ui = settings.prefect_ui_url
    elif api:
        prefect_ui = api.removesuffix("/").removesuffix("/api")
    else:
        prefect_ui = f"PREFECT_HOME={settings.state_home / 'prefect'} prefect server start"
    return mlflow_ui, prefect_ui
