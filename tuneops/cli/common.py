"""What every command shares: finding the project, loading spec and settings, printing."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tuneops.errors import TuneopsError
from tuneops.providers import resolve_endpoint
from tuneops.settings import TuneopsSettings
from tuneops.spec import SPEC_FILE_NAME, Spec, load_spec

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

SpecOption = Annotated[
    Path,
    typer.Option(
        "--spec",
        help="The project's spec file; its folder is the project (state under .tuneops/).",
        show_default=True,
    ),
]
DEFAULT_SPEC = Path(SPEC_FILE_NAME)


@dataclass(frozen=True)
class Project:
    """A loaded project: its spec, the folder it lives in, and the settings for that folder."""

    spec: Spec
    directory: Path
    settings: TuneopsSettings


def load_project(spec_path: Path) -> Project:
    """Load ``spec_path`` and the settings of the folder it is in."""
    spec, directory = load_spec(spec_path)
    return Project(spec=spec, directory=directory, settings=TuneopsSettings.load(directory))


def use_project_prefect_home(settings: TuneopsSettings) -> None:
    """Keep Prefect's ephemeral server database under ``<project>/.tuneops/prefect``.

    Only when the user points Prefect nowhere else (no ``PREFECT_API_URL``/``PREFECT_HOME``),
    and only before Prefect is first imported: its settings are read at import.
    """
    if os.environ.get("PREFECT_API_URL") or os.environ.get("PREFECT_HOME") or "prefect" in sys.modules:
        return
    home = settings.state_home / "prefect"
    home.mkdir(parents=True, exist_ok=True)  # Prefect creates only the last level, at import
    os.environ["PREFECT_HOME"] = str(home)


def settings_for(spec_path: Path) -> TuneopsSettings:
    """Settings for the project that ``spec_path`` belongs to, even when the spec is absent."""
    return TuneopsSettings.load(Path(spec_path).resolve().parent)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """While a command runs a flow, keep user errors to the one line ``main`` prints.

    Prefect logs a failed task or flow with its traceback, on handlers it configures lazily (when
    the first flow runs, on ``prefect.flow_runs``/``prefect.task_runs`` and friends), so a filter
    on the handlers present at the start misses them. The log-record factory sees every record of
    every logger: a record carrying one of *our* errors (a user mistake, a refused request, ...)
    loses its traceback; anything else (a bug) keeps it.
    """
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, TuneopsError):
            record.exc_info = None
            record.exc_text = None
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


@contextlib.contextmanager
def provider_running(project: Project) -> Iterator[None]:
    """For the local provider, run tuneops' service for the block when nothing answers at its URL."""
    endpoint = resolve_endpoint(project.spec.provider, project.settings)
    if not endpoint.is_local:
        yield
        return
    from tuneops.serving.local.launcher import answers_openai, running_service

    if not answers_openai(endpoint.base_url, endpoint.api_key):
        err_console.print(f"[dim]starting the local tuning service at {endpoint.base_url}[/dim]")
    with running_service(project.settings, endpoint.base_url):
        yield


@contextlib.contextmanager
def flow_session(project: Project, warm_up: Callable[[], threading.Thread] | None = None) -> Iterator[None]:
    """Everything a command needs before it calls a flow, in the order that overlaps start-ups.

    The project's Prefect server starts first (it boots while the rest happens), errors turn into
    one line, the local provider starts if the spec uses it and nothing answers, and only then
    does the block wait for the server. ``warm_up`` starts a thread (e.g. importing the flow)
    that runs while the provider starts and is joined before the block.
    """
    from tuneops.cli.prefect_server import project_prefect_home, project_prefect_server

    use_project_prefect_home(project.settings)
    prefect_home = project_prefect_home(project.settings.state_home)
    with project_prefect_server(prefect_home) as server, one_line_errors():
        warming = warm_up() if warm_up is not None else None
        with provider_running(project):
            if warming is not None:
                warming.join()
            if server is not None:
                server.wait_ready()
            yield
