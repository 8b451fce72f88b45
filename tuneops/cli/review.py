"""``tuneops data synthesize | review | harvest``: candidates in, reviewed examples out.

``synthesize`` asks a teacher model for new examples, ``harvest`` takes served requests with good
feedback; both feed a review queue (``.tuneops/review/<queue>/``). ``review`` shows each pending
candidate and records accept / reject / edit durably before showing the next; ``q`` quits and a
later ``review`` resumes where it stopped. After every decision the queue's accepted rows are
exported to the reviewed JSONL (``data.synthesize.output`` / ``data.harvest.output``) with its
provenance sidecar, which ``data.train`` (a file, folder or glob) can include.

Registered on the ``data`` group by ``register(data_app)``; ``python -m tuneops.cli.review`` runs
the same commands standalone.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.prompt import Prompt

from tuneops.cli.common import DEFAULT_SPEC, SpecOption, console, settings_for
from tuneops.errors import UsageError
from tuneops.spec import Spec, load_spec

QueueOption = Annotated[
    str, typer.Option("--queue", help="Review queue: synthetic, harvest or your own name.")
]


def _spec(spec_path: Path) -> tuple[Spec, Path]:
    if not spec_path.exists():
        raise UsageError(f"{spec_path}: no spec here", hint="run in a project or pass --spec PATH")
    return load_spec(spec_path)


def _output_for(spec: Spec, base: Path, queue: str) -> Path:
    for config in (spec.data.synthesize, spec.data.harvest):
        if config.queue == queue:
            return config.output if config.output.is_absolute() else base / config.output
    return base / "data" / "reviewed" / f"{queue}.jsonl"


def synthesize_command(
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Candidates to generate.")] = 20,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seed rows taken from data.train.")] = 10,
    spec_path: SpecOption = DEFAULT_SPEC,
) -> None:
    """Generate candidates with the teacher model and queue them for review."""
    from tuneops.tasks.data.synthesize import synthesize_from_spec

    spec, _ = _spec(spec_path)
    config = spec.data.synthesize
    report = synthesize_from_spec(spec, settings_for(spec_path), count=count, seeds=seeds)
    model = report.teacher_model
    console.print(
        f"teacher {escape(model)}: {report.generated} generated, {report.unparseable} unparseable lines, "
        f"{report.invalid} invalid, {report.duplicates} near-duplicates, {report.queued} queued "
        f"(queue '{config.queue}': tuneops data review --queue {config.queue})"
    )


def harvest_command(
    name: Annotated[str | None, typer.Argument(help="Served model name (default: model.name).")] = None,
    spec_path: SpecOption = DEFAULT_SPEC,
) -> None:
    """Queue served requests with good feedback and passing format checks (PII-redacted) for review."""
    from tuneops.tasks.data.harvest import harvest
    from tuneops.tasks.data.review import ReviewQueue

    spec, _ = _spec(spec_path)
    settings = settings_for(spec_path)
    config = spec.data.harvest
    queue = ReviewQueue.named(settings.state_home, config.queue)
    report = harvest(
        str(settings.state_db_url),
        name or spec.model.name,
        config,
        queue,
        system_prompt=spec.data.system_prompt.text,
    )
    console.print(
        f"{report.read} requests read: {report.no_text} without captured text, {report.low_feedback} below "
        f"feedback {config.min_feedback}, {report.format_failed} failing the format; {report.redacted} "
        f"redacted; {report.queued} queued (tuneops data review --queue {config.queue})"
    )


def _show(item: Any, position: int, total: int) -> None:
    lines = [
        f"[bold]{m['role']}[/bold]: {escape(str(m.get('content', '')))}" for m in item.example["messages"]
    ]
    origin = item.provenance.get("origin", "?")
    source = item.provenance.get("teacher_model") or item.provenance.get("request_id") or ""
    title = f"{position}/{total}  {item.item_id}  ({origin} {escape(str(source))})"
    console.print(Panel("\n".join(lines), title=title, expand=False))


def _edited(example: dict[str, Any]) -> dict[str, Any]:
    answer = Prompt.ask("new assistant answer (\\n for a line break)", console=console)
    messages = [dict(m) for m in example["messages"]]
    last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    messages[last]["content"] = answer.replace("\\n", "\n")
    return {**example, "messages": messages}


def review_command(
    queue_name: QueueOption = "synthetic",
    reviewer: Annotated[str | None, typer.Option("--reviewer", help="Your name in the provenance.")] = None,
    spec_path: SpecOption = DEFAULT_SPEC,
) -> None:
    """Accept, reject or edit each pending candidate; q quits, a later review resumes."""
    from tuneops.tasks.data.review import ReviewQueue, export_reviewed

    spec, base = _spec(spec_path)
    settings = settings_for(spec_path)
    queue = ReviewQueue.named(settings.state_home, queue_name)
    output = _output_for(spec, base, queue_name)
    who = reviewer or getpass.getuser()
    pending = queue.pending()
    if not pending:
        console.print(f"queue '{queue_name}': nothing to review")
    for position, item in enumerate(pending, 1):
        _show(item, position, len(pending))
        choice = Prompt.ask(
            "[a]ccept / [r]eject / [e]dit / [q]uit", choices=["a", "r", "e", "q"], console=console
        )
        if choice == "q":
            break
        decision = {"a": "accept", "r": "reject", "e": "edit"}[choice]
        made = queue.decide(item.item_id, decision, who, _edited(item.example) if choice == "e" else None)  # type: ignore[arg-type]
        if made.reviewer != who or made.decision != decision:
            console.print(f"already decided by {escape(made.reviewer)}: {made.decision} (kept)")
        else:
            console.print(f"{made.decision}ed" if made.decision != "edit" else "edited and accepted")
        export_reviewed(queue, output)
    rows = export_reviewed(queue, output)
    counts = queue.counts()
    console.print(
        f"queue '{queue_name}': {counts['accept']} accepted, {counts['edit']} edited, {counts['reject']} "
        f"rejected, {counts['pending']} pending; {rows} rows in {escape(str(output))}",
        soft_wrap=True,
    )


def register(data_app: typer.Typer) -> None:
    """Add ``synthesize``, ``review`` and ``harvest`` to the ``tuneops data`` group."""
    data_app.command("synthesize")(synthesize_command)
    data_app.command("review")(review_command)
    data_app.command("harvest")(harvest_command)


review_app = typer.Typer(help="Synthetic and harvested examples through human review.", no_args_is_help=True)
register(review_app)

if __name__ == "__main__":
    review_app()
