"""``tuneops finetune``: run just the fine-tune stage, with live job status.

Prints the job id, a live status/progress display while the provider trains, and the model id
to call afterwards. Re-running the same command attaches to the same job: never a duplicate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

from tuneops.cli.common import (
    DEFAULT_SPEC,
    SpecOption,
    console,
    flow_session,
    load_project,
)
from tuneops.tasks.finetune.types import FineTuneJob, TrainingEvent


class _LiveStatus:
    """A rich progress line fed by the wait loop: job status, steps done, last training loss."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task_id = progress.add_task("submitting", total=None)
        self.announced: str | None = None

    def __call__(self, job: FineTuneJob, events: list[TrainingEvent]) -> None:
        if self.announced != job.id:
            self.announced = job.id
            self.progress.console.print(f"job [bold]{escape(job.id)}[/bold] on {escape(job.provider)}")
        steps = [e for e in events if e.is_metrics]
        update: dict[str, object] = {"description": f"{job.status}"}
        if steps:
            last = steps[-1]
            update["completed"] = last.step
            totals = [e.total_steps for e in steps if e.total_steps]
            if totals:
                update["total"] = max(totals)
            if last.train_loss is not None:
                update["description"] = f"{job.status}  loss {last.train_loss:.4f}"
        self.progress.update(self.task_id, **update)  # type: ignore[arg-type]


def finetune_command(
    spec: SpecOption = DEFAULT_SPEC,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="NAME@DIGEST of a dataset version (default: version the spec data)."),
    ] = None,
    attempt: Annotated[
        int, typer.Option("--attempt", min=1, help="Raise to submit a new job after a failed one.")
    ] = 1,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0.01, help="Seconds between the first status polls.")
    ] = 5.0,
) -> None:
    """Fine-tune the spec's model through its provider and wait for the result."""
    project = load_project(spec)  # fail fast on a bad spec, before Prefect starts
    from tuneops.tasks.finetune.wait import progress_listener

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with flow_session(project), Progress(*columns, console=console, transient=False) as progress:
        from tuneops.flows.finetune import finetune

        token = progress_listener.set(_LiveStatus(progress))
        try:
            job = finetune(
                spec_path=str(Path(spec).resolve()),
                dataset_ref=dataset,
                attempt=attempt,
                poll_interval=poll_interval,
            )
        finally:
            progress_listener.reset(token)
    console.print(f"job {escape(job.id)} {job.status} for {escape(project.spec.model.name)}")
    if job.deployment:
        console.print(f"deployment: [bold]{escape(job.deployment)}[/bold]")
    console.print(f"fine-tuned model: [bold]{escape(job.fine_tuned_model or '')}[/bold]")


def register(app: typer.Typer) -> None:
    """Add ``tuneops finetune`` to the root app."""
    app.command("finetune")(finetune_command)
