"""``tuneops init DIR``: scaffold a working project from the packaged example.

The example (``tuneops/resources/example``: ``tuneops.yaml`` plus the claims dataset) ships
inside the wheel, so ``init`` works from an installed package without the repository.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tuneops.cli.common import console
from tuneops.errors import UsageError
from tuneops.spec import SPEC_FILE_NAME

GITIGNORE = ".tuneops/\n.env\n"


def example_root() -> Traversable:
    """The packaged example project."""
    return resources.files("tuneops").joinpath("resources", "example")


def init_project(directory: Path, *, force: bool = False) -> list[Path]:
    """Copy the example project into ``directory``; return the files written.

    Raises:
        UsageError: ``directory`` already holds a project (and ``force`` is false), or is a file.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory}: exists and is not a directory")
    spec = directory / SPEC_FILE_NAME
    if spec.exists() and not force:
        raise UsageError(
            f"{spec}: a project already exists here",
            hint="pass --force to overwrite its tuneops.yaml and example data",
        )
    written: list[Path] = []
    directory.mkdir(parents=True, exist_ok=True)
    _copy(example_root(), directory, written)
    gitignore = directory / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(GITIGNORE)
        written.append(gitignore)
    return written


def _copy(source: Traversable, target: Path, written: list[Path]) -> None:
    for entry in source.iterdir():
        if entry.name.startswith((".", "__")):
            continue
        destination = target / entry.name
        if entry.is_dir():
            destination.mkdir(exist_ok=True)
            _copy(entry, destination, written)
        else:
            destination.write_bytes(entry.read_bytes())
            written.append(destination)


def register(app: typer.Typer) -> None:
    """Add ``tuneops init`` to the root app."""

    @app.command("init")
    def init_command(
        directory: Annotated[Path, typer.Argument(help="Folder for the new project (created if missing).")],
        force: Annotated[bool, typer.Option("--force", help="Overwrite an existing project.")] = False,
    ) -> None:
        """Scaffold a working project: DIR/tuneops.yaml plus an example claims dataset.

        Every command run inside DIR uses ./tuneops.yaml and keeps its state under DIR/.tuneops/.
        """
        written = init_project(directory, force=force)
        console.print(f"created project in {escape(str(directory))} ({len(written)} files)")
        console.print(f"  cd {escape(str(directory))}")
        console.print("  tuneops data validate claims/train.jsonl")
        console.print("  tuneops data version")
