"""``tuneops rollout``: start a rollout, watch its step table, abort it, approve or reject it.

``start`` runs the ``rollout`` flow in this process (as the deployment would); ``status`` prints
the state database's step table; ``abort`` asks the running flow to roll back at its next
interval; ``approve``/``reject`` answer a rollout paused for approval by resuming its Prefect flow
run with the same input the Prefect UI form sends (``{"approve": ..., "reason": ...}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tuneops.cli.common import DEFAULT_SPEC, SpecOption, console, load_project, one_line_errors
from tuneops.errors import UserError

rollout_app = typer.Typer(
    help="Roll a challenger out on live traffic: start, status, abort, approve, reject."
)
NameArg = Annotated[str, typer.Argument(help="The registered model name (the spec's model.name).")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why; recorded with the answer.")]


@rollout_app.command("start")
def start_command(
    name: NameArg,
    spec: SpecOption = DEFAULT_SPEC,
    version: Annotated[
        str | None, typer.Option("--version", help="Version to roll out (default: challenger).")
    ] = None,
    strategy: Annotated[
        str | None, typer.Option("--strategy", help="shadow, blue-green, canary or ab.")
    ] = None,
) -> None:
    """Run the rollout flow for NAME's challenger until it is promoted, rolled back or aborted."""
    project = load_project(spec)
    if project.spec.model.name != name:
        raise UserError(f"{spec} describes {project.spec.model.name}, not {name}")
    from tuneops.cli.common import use_project_prefect_home
    from tuneops.cli.prefect_server import project_prefect_home, project_prefect_server

    use_project_prefect_home(project.settings)
    with (
        project_prefect_server(project_prefect_home(project.settings.state_home)) as server,
        one_line_errors(),
    ):
        if server is not None:
            server.wait_ready()
        from tuneops.flows.rollout import rollout

        outcome = rollout(spec_path=str(Path(spec).resolve()), version=version, strategy=strategy)
    console.print(f"rollout {outcome.rollout_id}: {outcome.status}: {escape(outcome.reason)}")


def _store(spec: Path):  # type: ignore[no-untyped-def]
    from tuneops.tasks.rollout.state import RolloutStore

    return RolloutStore.open(load_project(spec).settings.state_db_url or "")


@rollout_app.command("status")
def status_command(name: NameArg, spec: SpecOption = DEFAULT_SPEC) -> None:
    """Print NAME's latest rollout: status, guardrails of the last look, and the step table."""
    from tuneops.tasks.rollout.report import report_markdown

    store = _store(spec)
    try:
        record = store.latest(name)
        if record is None:
            raise UserError(f"{name} has never been rolled out")
        console.print(escape(report_markdown(record, store.steps(record.id))), markup=True)
    finally:
        store.close()


@rollout_app.command("abort")
def abort_command(
    name: NameArg, spec: SpecOption = DEFAULT_SPEC, reason: ReasonOpt = "aborted by a user"
) -> None:
    """Ask NAME's running rollout to roll back and stop at its next analysis interval."""
    store = _store(spec)
    try:
        record = store.request_abort(name, reason)
    finally:
        store.close()
    if record is None:
        raise UserError(f"{name} has no running rollout")
    console.print(f"rollout {record.id} will stop at its next interval: {escape(reason)}")


def answer_approval(name: NameArg, spec: Path, *, approve: bool, reason: str) -> str:
    """Resume the paused flow run of NAME's rollout with the approval input; its flow run id."""
    if not reason.strip():
        raise UserError('an approval answer needs a reason: pass --reason "..."')
    store = _store(spec)
    try:
        record = store.active(name)
    finally:
        store.close()
    if record is None or record.status != "awaiting-approval" or not record.flow_run_id:
        raise UserError(f"{name} has no rollout waiting for approval")
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(record.flow_run_id)  # type: ignore[arg-type]
        if run.state is None or not run.state.is_paused():
            raise UserError(f"flow run {record.flow_run_id} of {name}'s rollout is not paused")
    resume_flow_run(record.flow_run_id, run_input={"approve": approve, "reason": reason})  # type: ignore[arg-type]
    return record.flow_run_id


@rollout_app.command("approve")
def approve_command(name: NameArg, reason: ReasonOpt, spec: SpecOption = DEFAULT_SPEC) -> None:
    """Approve the final promotion of NAME's paused rollout."""
    run_id = answer_approval(name, spec, approve=True, reason=reason)
    console.print(f"approved; flow run {run_id} resumes")


@rollout_app.command("reject")
def reject_command(name: NameArg, reason: ReasonOpt, spec: SpecOption = DEFAULT_SPEC) -> None:
    """Reject NAME's paused rollout: the challenger is rolled back."""
    run_id = answer_approval(name, spec, approve=False, reason=reason)
    console.print(f"rejected; flow run {run_id} rolls back")


def register(app: typer.Typer) -> None:
    """Add ``tuneops rollout`` to the root app."""
    app.add_typer(rollout_app, name="rollout")
