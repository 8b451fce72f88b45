"""``tuneops traffic replay``: drive the gateway with chat requests from a JSONL file or a split.

For watching a rollout without production traffic (the demo, a staging soak) or replaying your
own logs: rows ``{"messages": [...]}`` (an optional ``"user"`` is kept), sent as sticky users
with the official ``openai`` SDK at ``--rate`` per second, stopping after ``--requests`` or
``--duration`` seconds, whichever comes first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape

from tuneops.cli.common import DEFAULT_SPEC, SpecOption, console, err_console, load_project
from tuneops.errors import UserError
from tuneops.settings import DEFAULT_GATEWAY_URL

traffic_app = typer.Typer(help="Send traffic through the gateway (replay a chat file or a split).")


@traffic_app.command("replay")
def replay_command(
    file: Annotated[Path | None, typer.Argument(help="A JSONL chat file (your own logs work).")] = None,
    split: Annotated[
        Literal["train", "validation", "test"] | None,
        typer.Option("--split", help="Replay the spec's data split instead of FILE (e.g. test, held out)."),
    ] = None,
    spec: SpecOption = DEFAULT_SPEC,
    model: Annotated[str | None, typer.Option("--model", help="Model to ask for (default: spec's).")] = None,
    gateway_url: Annotated[
        str, typer.Option("--gateway-url", help="The gateway's /v1 root.")
    ] = DEFAULT_GATEWAY_URL,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="Bearer key (default: first of TUNEOPS_GATEWAY_API_KEYS).")
    ] = None,
    rate: Annotated[float, typer.Option("--rate", help="Requests per second.")] = 5.0,
    users: Annotated[int, typer.Option("--users", help="Sticky users to spread the requests over.")] = 50,
    duration: Annotated[float, typer.Option("--duration", help="Stop after this many seconds.")] = 60.0,
    requests: Annotated[int | None, typer.Option("--requests", help="Stop after this many requests.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Requests in flight at most.")] = 8,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="max_tokens of each request.")
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            "--temperature",
            help="Sampling temperature (default: the spec's evaluation.temperature, as evaluated).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds which row and user come next.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Replay FILE (or --split SPLIT of the spec's data) through the gateway, bounded in count and time."""
    from tuneops.tasks.rollout.traffic import ReplayPlan, read_chat_prompts, replay_traffic

    if (file is None) == (split is None):
        raise UserError("give a chat FILE or --split SPLIT (one of them)")
    path = file
    if split is not None or model is None or api_key is None or temperature is None:
        project = None
        if split is not None or model is None or Path(spec).is_file():
            project = load_project(spec)
        if project is not None:
            model = model or project.spec.model.name
            # answers are judged by the format the evaluation measured, so sample as it did
            temperature = project.spec.evaluation.temperature if temperature is None else temperature
            if split is not None:
                path = getattr(project.spec.data, split)
                if path is None or not Path(path).is_file():
                    raise UserError(f"the spec's data.{split} is not a file", hint="pass a chat FILE instead")
            if api_key is None:
                keys = project.settings.gateway_keys
                api_key = keys[0] if keys else None
    assert path is not None and model is not None
    plan = ReplayPlan(rate=rate, users=users, duration_seconds=duration, requests=requests,
                      concurrency=concurrency, max_tokens=max_tokens, seed=seed,
                      temperature=temperature)  # fmt: skip
    prompts = read_chat_prompts(Path(path))
    err_console.print(
        f"[dim]replaying {len(prompts)} prompt(s) from {escape(str(path))} to {escape(gateway_url)}: "
        f"{rate:g}/s over {users} users, at most {requests or 'unbounded'} requests and {duration:g}s[/dim]"
    )

    def progress(report: object) -> None:
        err_console.print(f"[dim]  sent {getattr(report, 'sent', 0)}[/dim]")

    report = replay_traffic(gateway_url, api_key, model, prompts, plan, progress=progress)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    console.print(
        f"sent {report.sent}, answered {report.answered}, failed {report.failed} "
        f"in {report.elapsed_seconds:.1f}s"
    )
    for name, counts in (("version", report.versions), ("arm", report.arms), ("error", report.errors)):
        if counts:
            console.print(f"  by {name}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))


def register(app: typer.Typer) -> None:
    """Add ``tuneops traffic`` to the root app."""
    app.add_typer(traffic_app, name="traffic")
