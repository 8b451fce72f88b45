"""``tuneops eval``: run just the evaluation stage for a candidate model and print the verdict.

Prints the side-by-side table (means with bootstrap intervals, paired differences), the gate's
decision with every reason, and the MLflow run id. Exit code 0 when the gate passed, 3 when it
failed (a result, not an error), 1/2 for errors.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markdown import Markdown
from rich.markup import escape

from tuneops.cli.common import DEFAULT_SPEC, Project, SpecOption, console, load_project
from tuneops.errors import TuneopsError, UsageError

GATE_FAILED_EXIT_CODE = 3


class _OneLineForOurErrors(logging.Filter):
    """Drop the traceback Prefect's console log attaches to *our* errors (the CLI prints them as
    one line); anything else is a bug and keeps its traceback. Same as ``tuneops finetune``'s."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, TuneopsError):
            record.exc_info = None
            record.exc_text = None
        return True


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    loggers = (logging.getLogger(), logging.getLogger("prefect"))
    handlers = [h for lg in loggers for h in lg.handlers if isinstance(h, logging.StreamHandler)]
    quiet = _OneLineForOurErrors()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


@contextlib.contextmanager
def _provider_running(project: Project) -> Iterator[None]:
    """With the local provider, start the local service for the evaluation when nothing answers."""
    provider = project.spec.provider
    if provider.kind != "local":
        yield
        return
    from tuneops.serving.local.launcher import running_service

    with running_service(project.settings, provider.base_url):
        yield


def eval_command(
    candidate: Annotated[
        str, typer.Option("--candidate", help="The fine-tune's model id on the spec's provider (ft:...).")
    ],
    spec: SpecOption = DEFAULT_SPEC,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="NAME@DIGEST of a dataset version whose test split is used."),
    ] = None,
    test_file: Annotated[
        Path | None,
        typer.Option("--test-file", help="A local chat JSONL test file (default: the spec's data.test)."),
    ] = None,
    champion: Annotated[
        str | None,
        typer.Option("--champion", help="The champion's model id; the candidate must not lose to it."),
    ] = None,
) -> None:
    """Evaluate a fine-tuned model against the base model (and champion) and apply the quality gates."""
    if dataset and test_file:
        raise UsageError("give either --dataset NAME@DIGEST or --test-file PATH, not both")
    project = load_project(spec)  # fail fast on a bad spec, before Prefect starts
    from tuneops.tasks.evaluation.sources import resolve_test_split

    resolve_test_split(project.spec, project.settings, dataset, test_file)  # and on a missing split
    from tuneops.flows.evaluate import evaluate

    with _provider_running(project), _one_line_errors():
        result = evaluate(
            spec_path=str(Path(spec).resolve()),
            candidate_model=candidate,
            dataset_ref=dataset,
            test_file=str(test_file.resolve()) if test_file else None,
            champion_model=champion,
            show_progress=True,
        )
    console.print(Markdown(result.markdown))
    for check in result.decision.checks:
        mark = "[green]pass[/green]" if check.passed else "[red]FAIL[/red]"
        console.print(f"  {mark} {escape(check.message)}")
    if result.mlflow_run_id:
        console.print(f"MLflow run: {escape(result.mlflow_run_id)}")
    verdict = "[green]passed[/green]" if result.passed else "[red]failed[/red]"
    console.print(f"gate {verdict} for {escape(candidate)}")
    if not result.passed:
        raise typer.Exit(GATE_FAILED_EXIT_CODE)


def register(app: typer.Typer) -> None:
    """Add ``tuneops eval`` to the root app."""
    app.command("eval")(eval_command)
