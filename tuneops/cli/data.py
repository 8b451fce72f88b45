"""``tuneops data``: validate, version, list and show chat fine-tuning datasets.

Exit codes: 0 valid / done, 1 invalid data or a failed store, 2 usage error (e.g. no such file).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from tuneops.cli.common import DEFAULT_SPEC, SpecOption, console, err_console, settings_for
from tuneops.errors import UsageError
from tuneops.spec import Spec, SplitConfig, load_spec

SPLITS = ("train", "validation", "test")
PROGRESS_MIN_BYTES = 32 * 1024 * 1024
# Per-example token limits of models people fine-tune (unknown models get the spec's limit).
MODEL_TOKEN_LIMITS = {
    "gpt-4.1": 65_536,
    "gpt-4.1-mini": 65_536,
    "gpt-4.1-nano": 65_536,
    "gpt-4o": 65_536,
    "gpt-4o-mini": 65_536,
    "gpt-3.5-turbo": 16_385,
    "tuneops-tiny": 1_024,
}

data_app = typer.Typer(
    help="Validate and version chat fine-tuning datasets (OpenAI chat JSONL).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (stable schema).")]


def register(app: typer.Typer) -> None:
    """Add ``tuneops data ...`` to the root app (synthesize, review and harvest included)."""
    from tuneops.cli.review import register as register_review

    register_review(data_app)
    app.add_typer(data_app, name="data")


def _optional_spec(spec_path: Path) -> Spec | None:
    """The project's spec when there is one; a missing default spec is fine, a broken one is not."""
    if spec_path == DEFAULT_SPEC and not spec_path.exists():
        return None
    return load_spec(spec_path)[0]


def _model_limit(model: str) -> int | None:
    for name in sorted(MODEL_TOKEN_LIMITS, key=len, reverse=True):
        if model == name or re.match(rf"^{re.escape(name)}-\d{{4}}-\d{{2}}-\d{{2}}$", model):
            return MODEL_TOKEN_LIMITS[name]
    return None


@contextmanager
def _progress(path: Path, label: str) -> Iterator[Any]:
    """A byte progress bar on stderr for large files, only when stderr is a terminal."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    if not err_console.is_terminal or size < PROGRESS_MIN_BYTES:
        yield None
        return
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=size)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@data_app.command("validate")
def validate_command(
    file: Annotated[Path, typer.Argument(help="The JSONL file to check.", show_default=False)],
    as_json: JsonOption = False,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Check per-example tokens against this model's limit (e.g. gpt-4o-mini)."
        ),
    ] = None,
    spec_path: SpecOption = DEFAULT_SPEC,
) -> None:
    """Check FILE the way OpenAI's fine-tuning does, and more; report every problem by line.

    Exit 0 when valid (warnings allowed), 1 when invalid, 2 on a usage error.
    Limits and the system-prompt policy come from ./tuneops.yaml when there is one.
    """
    from dataclasses import replace

    from tuneops.tasks.data.scan import validate_file
    from tuneops.tasks.data.validate import ValidationOptions
    from tuneops.tasks.data.version import options_from_spec

    spec = _optional_spec(spec_path)
    options = options_from_spec(spec) if spec else ValidationOptions()
    if model:
        limit = _model_limit(model)
        if limit is None:
            raise UsageError(
                f"--model {model!r}: unknown per-example token limit",
                hint=f"known: {', '.join(sorted(MODEL_TOKEN_LIMITS))}; or set data.max_tokens_per_example",
            )
        options = replace(options, max_tokens_per_example=limit)
    with _progress(file, "validating") as progress:
        report = validate_file(file, options, progress=progress)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    raise typer.Exit(0 if report.valid else 1)


def _print_report(report: Any) -> None:
    console.print(
        f"[bold]{escape(report.path)}[/bold]  {report.size_bytes:,} bytes  sha256 {report.sha256[:16]}…"
    )
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("lines", f"{report.lines:,}")
    table.add_row("examples", f"{report.examples:,} ({report.invalid_examples:,} invalid lines)")
    table.add_row("duplicates", f"{report.duplicates:,}")
    table.add_row("system prompts", f"{report.system_prompts:,} distinct")
    t = report.tokens
    table.add_row(
        f"tokens/example ({report.encoding})",
        f"min {t.min:,}  p5 {t.p5:,}  median {t.p50:,}  mean {t.mean:,}  p95 {t.p95:,}  max {t.max:,}",
    )
    table.add_row("limit per example", f"{report.max_tokens_per_example:,}")
    epochs = f"{report.n_epochs} epochs" + (" (auto)" if report.epochs_auto else "")
    table.add_row(
        "training tokens",
        f"{report.billing_tokens_per_epoch:,}/epoch x {epochs} = ~{report.estimated_training_tokens:,}",
    )
    console.print(table)
    for problem in report.problems:
        colour = "red" if problem.severity == "error" else "yellow"
        where = f"line {problem.line}" if problem.line else "file"
        console.print(
            f"  {where:>11}  [{colour}]{problem.severity:<7}[/{colour}] {problem.code:<26} "
            f"{escape(problem.message)}",
            soft_wrap=True,
        )
    if report.problems_truncated:
        console.print(f"  … and {report.problems_truncated:,} more problems (counts: {report.counts})")
    if report.valid:
        console.print(f"[green]valid[/green] ({report.warnings} warning(s))")
    else:
        console.print(f"[red]invalid[/red]: {report.errors} error(s), {report.warnings} warning(s)")


@data_app.command("version")
def version_command(
    file: Annotated[
        Path | None,
        typer.Argument(help="Training JSONL (default: data.train of the spec).", show_default=False),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Dataset name (default: the spec's).")] = None,
    validation: Annotated[Path | None, typer.Option("--validation", help="Validation JSONL file.")] = None,
    test: Annotated[Path | None, typer.Option("--test", help="Test JSONL file.")] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Split seed (default: the spec's or 42).")
    ] = None,
    as_json: JsonOption = False,
    spec_path: SpecOption = DEFAULT_SPEC,
) -> None:
    """Validate, split and store a content-addressed dataset version; print NAME@DIGEST.

    Splits not given as files are carved from the training file by the spec's ratios and seed.
    Versioning identical content again writes nothing and returns the same version.
    """
    from tuneops.tasks.data.catalog import store_for
    from tuneops.tasks.data.validate import ValidationOptions
    from tuneops.tasks.data.version import DatasetSources, options_from_spec, version_files

    spec = _optional_spec(spec_path)
    settings = settings_for(spec_path)
    if file is None:
        if spec is None:
            raise UsageError("no FILE given and no tuneops.yaml here", hint="pass FILE or --spec PATH")
        sources = DatasetSources(spec.data.train, spec.data.validation, spec.data.test)
    else:
        sources = DatasetSources(file, validation, test)
    dataset_name = name or (spec.dataset_name if spec else _name_from(sources.train))
    split = spec.data.split if spec else SplitConfig()
    if seed is not None:
        split = split.model_copy(update={"seed": seed})
    with _progress(sources.train, "versioning") as progress:
        version = version_files(
            sources,
            name=dataset_name,
            store=store_for(settings),
            home=settings.state_home,
            split=split,
            options=options_from_spec(spec) if spec else ValidationOptions(),
            system_prompt=spec.data.system_prompt if spec else None,
            progress=progress,
        )
    if as_json:
        typer.echo(json.dumps(_version_dict(version), indent=2))
        return
    state = "[green]created[/green]" if version.created else "unchanged (already stored, nothing written)"
    console.print(f"{version.ref}  {state}")
    _print_splits(version)
    console.print(f"store: {escape(version.uri)}", soft_wrap=True)


def _name_from(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-._") or "dataset"
    return stem[:128]


def _version_dict(version: Any) -> dict[str, Any]:
    return {
        "ref": version.ref,
        "name": version.name,
        "digest": version.digest,
        "uri": version.uri,
        "created": version.created,
        "splits": {
            name: {"uri": s.uri, "sha256": s.sha256, "rows": s.rows, "tokens": s.tokens}
            for name, s in version.splits.items()
        },
        "manifest": version.manifest,
    }


def _print_splits(version: Any) -> None:
    table = Table("split", "rows", "tokens", "sha256", box=None)
    for name, split in version.splits.items():
        table.add_row(name, f"{split.rows:,}", f"{split.tokens:,}", split.sha256[:16] + "…")
    console.print(table)


@data_app.command("list")
def list_command(
    name: Annotated[str | None, typer.Argument(help="Only this dataset.", show_default=False)] = None,
    as_json: JsonOption = False,
    spec_path: SpecOption = DEFAULT_SPEC,
) -> None:
    """List committed dataset versions in the project's data store, oldest first."""
    from tuneops.tasks.data.catalog import list_versions, store_for

    versions = list_versions(store_for(settings_for(spec_path)), name)
    if as_json:
        typer.echo(json.dumps([_version_dict(v) | {"manifest": None} for v in versions], indent=2))
        return
    if not versions:
        console.print("no dataset versions yet; run 'tuneops data version'")
        return
    table = Table("name", "digest", "created", "train", "validation", "test", "tokens", box=None)
    for v in versions:
        rows = {
            s: (f"{v.splits[s].rows:,}" if s in v.splits else "-") for s in ("train", "validation", "test")
        }
        table.add_row(
            v.name,
            v.digest[:12],
            str(v.manifest.get("created_at", "")),
            rows["train"],
            rows["validation"],
            rows["test"],
            f"{v.manifest.get('tokens', 0):,}",
        )
    console.print(table)


@data_app.command("show")
def show_command(
    ref: Annotated[str, typer.Argument(help="NAME (newest version) or NAME@DIGEST (a prefix will do).")],
    as_json: JsonOption = False,
    spec_path: SpecOption = DEFAULT_SPEC,
) -> None:
    """Show one dataset version: splits, counts, source, split seed, validation summary."""
    from tuneops.tasks.data.catalog import resolve_dataset_version, store_for

    version = resolve_dataset_version(store_for(settings_for(spec_path)), ref)
    if as_json:
        typer.echo(json.dumps(_version_dict(version), indent=2))
        return
    manifest = version.manifest
    console.print(f"[bold]{version.ref}[/bold]")
    console.print(f"created {manifest.get('created_at')}  encoding {manifest.get('encoding')}")
    console.print(f"store   {escape(version.uri)}", soft_wrap=True)
    for split_name, source in manifest.get("source", {}).items():
        console.print(f"source  {split_name}: {escape(str(source))}")
    split = manifest.get("split", {})
    console.print(
        f"split   seed {split.get('seed')}, carved from train: "
        f"{', '.join(split.get('carved_from_train', [])) or '-'}"
    )
    _print_splits(version)
    for split_name, summary in manifest.get("validation_report", {}).items():
        console.print(
            f"{split_name}: {summary.get('examples')} examples, {summary.get('warnings')} warning(s), "
            f"~{summary.get('estimated_training_tokens'):,} training tokens"
        )
