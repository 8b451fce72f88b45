"""``tuneops eval``: run just the evaluation stage for a candidate model and print the verdict.

Prints the side-by-side table (means with bootstrap intervals, paired differences), the gate's
decision with every reason, and the MLflow run id. Exit code 0 when the gate passed, 3 when it
failed (a result, not an error), 1/2 for errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markdown import Markdown
from rich.markup import escape

from tuneops.cli.common import (
    DEFAULT_SPEC,
    SpecOption,
    console,
    flow_session,
    load_project,
)
from tuneops.errors import UsageError

GATE_FAILED_EXIT_CODE = 3


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
    with flow_session(project):
        from tuneops.flows.evaluate import evaluate

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
