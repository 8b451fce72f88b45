"""``tuneops setup``: prepare this machine (and the project, inside one) so the first run is quick.

- Machine: the migrated, empty Prefect and MLflow databases new projects start from
  (:mod:`tuneops.state_templates`). Without them the first ``tuneops run`` of each new library
  version builds them itself, which adds 10-20 s to that run.
- Project (when a ``tuneops.yaml`` is found): the NLTK data BLEU/GLEU/METEOR need, built from
  local sources, with what to install when a source is missing.

Idempotent: what exists is left alone. ``scripts/setup`` runs it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from tuneops.cli.common import DEFAULT_SPEC, SpecOption, console, one_line_errors, settings_for
from tuneops.state_templates import MLFLOW, PREFECT, template_path


def register(app: typer.Typer) -> None:
    """Add ``tuneops setup``."""
    app.command("setup")(setup)


def setup(
    spec: SpecOption = DEFAULT_SPEC,
    project_data: Annotated[
        bool, typer.Option("--project/--machine-only", help="Also prepare the project found at --spec.")
    ] = True,
) -> None:
    """Prepare this machine (database templates) and the project (NLTK data) for quick first runs."""
    with one_line_errors():
        for kind, build in ((PREFECT, _build_prefect_template), (MLFLOW, _build_mlflow_template)):
            path = template_path(kind)
            if path.exists():
                console.print(f"{kind} database template: present ({path})")
                continue
            started = time.monotonic()
            with console.status(f"building the {kind} database template (once per machine and version)"):
                build()
            state = "built" if path.exists() else "[yellow]could not be built[/yellow] (runs build their own)"
            console.print(f"{kind} database template: {state} in {time.monotonic() - started:.1f} s ({path})")
        if project_data and Path(spec).is_file():
            _prepare_nltk_data(Path(spec))


def _build_prefect_template() -> None:
    """Start the project-style Prefect server on an empty home once; it keeps the template."""
    from tuneops.cli.prefect_server import project_prefect_server

    with (
        tempfile.TemporaryDirectory(prefix="tuneops-template-") as tmp,
        project_prefect_server(Path(tmp)) as server,
    ):
        if server is not None:
            server.wait_ready()


def _build_mlflow_template() -> None:
    """Create an MLflow store in a throwaway folder; creating it keeps the template."""
    from tuneops.registry.mlflow_store import open_mlflow_store  # imports MLflow: only when needed

    with tempfile.TemporaryDirectory(prefix="tuneops-template-") as tmp:
        open_mlflow_store(f"sqlite:///{Path(tmp) / 'mlflow.db'}")


def _prepare_nltk_data(spec: Path) -> None:
    from tuneops.tasks.evaluation.nltk_data import RESOURCES, ensure_nltk_data, nltk_data_dir

    target = nltk_data_dir(settings_for(spec).state_home)
    available = ensure_nltk_data(target)
    missing = sorted(set(RESOURCES) - available)
    if missing:
        console.print(
            f"NLTK data: [yellow]missing {', '.join(missing)}[/yellow] (BLEU/GLEU/METEOR will be skipped); "
            "install Debian's wordnet-base and wordnet-sense-index, then run tuneops setup again",
            soft_wrap=True,
        )
    else:
        console.print(f"NLTK data: ready ({target})")
