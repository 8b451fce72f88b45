"""Cross-checks of infra definitions against the code that reads them.

An infra file names three kinds of things the code must know: commands (``tuneops serve gateway
--port 8780``, ``mlflow server --backend-store-uri ...``, ``prefect worker start --pool ...``),
environment variables, and other files. Each check asks the program that will read the value:
tuneops' and MLflow's click trees and Prefect's cyclopts app parse the command line exactly as
they would at start-up (nothing runs); a ``TUNEOPS_*`` variable must be a settings field, one of
its aliases, or a name the code reads; a ``PREFECT_*`` variable must change Prefect's settings;
MLflow's and boto's variables must be names those packages read.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import typer
from pydantic import AliasChoices

from tuneops.settings import TuneopsSettings

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
SOURCE_FOLDERS = ("tuneops", "serving", "registry", "tasks", "flows")
# Variables documented by the container images themselves (postgres, minio), not read by our code.
IMAGE_VARIABLES = {
    "postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"},
    "minio/minio": {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"},
}


def as_argv(command: str | Sequence[str]) -> list[str]:
    """A compose/Kubernetes command as an argument list (a string is split like a shell would)."""
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def check_command(command: str | Sequence[str]) -> None:
    """Parse ``command`` with the CLI it names; raise AssertionError on an unknown command or option."""
    argv = as_argv(command)
    program, args = argv[0], argv[1:]
    if program == "tuneops":
        from tuneops.cli.main import app

        _parse_click(typer.main.get_command(app), "tuneops", args)
    elif program == "mlflow":
        from mlflow.cli import cli

        _parse_click(cli, "mlflow", args)
    elif program == "prefect":
        from cyclopts.exceptions import CycloptsError
        from prefect.cli._app import _app

        try:
            _app.parse_args(args, exit_on_error=False, print_error=False)
        except CycloptsError as exc:
            raise AssertionError(f"prefect {shlex.join(args)}: {exc}") from exc
    else:
        raise AssertionError(f"{program}: not a program the tuneops image runs (tuneops, mlflow, prefect)")


def _parse_click(command: Any, prog: str, args: list[str]) -> None:
    """Walk a click tree (MLflow's click, or the copy Typer vendors: hence duck typing) and parse
    the last command's arguments the way its ``main`` would, without invoking it."""
    parent = command.context_class(command, info_name=prog)
    path = [prog]
    while hasattr(command, "list_commands"):
        if not args or args[0].startswith("-"):
            raise AssertionError(f"{' '.join(path)}: no sub-command given")
        sub = command.get_command(parent, args[0])
        if sub is None:
            raise AssertionError(f"{' '.join(path)}: no sub-command {args[0]!r}")
        path.append(args[0])
        command, args = sub, args[1:]
        parent = command.context_class(command, info_name=path[-1], parent=parent)
    try:
        command.make_context(path[-1], list(args), parent=parent.parent)
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # not a usage error: a bug in this check
            raise
        raise AssertionError(f"{' '.join(path)}: {exc.format_message()}") from exc


@functools.cache
def tuneops_variables() -> frozenset[str]:
    """Every ``TUNEOPS_*`` name the code reads: settings fields, their aliases, and literals."""
    names: set[str] = set()
    prefix = TuneopsSettings.model_config.get("env_prefix", "")
    for name, field in TuneopsSettings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{name}".upper())
    for folder in SOURCE_FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            names.update(re.findall(r"[\"'](TUNEOPS_[A-Z0-9_]+)[\"']", path.read_text(encoding="utf-8")))
    return frozenset(names)


@functools.cache
def _package_literals(package: str) -> str:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, package
    root = Path(next(iter(spec.submodule_search_locations)))
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in root.rglob("*.py"))


def _read_by(package: str, name: str) -> bool:
    """``name`` appears as a string literal in ``package``'s source (how it reads the variable)."""
    text = _package_literals(package)
    return f'"{name}"' in text or f"'{name}'" in text


# Values to try for a variable named in prose (no value given): one of them must take effect.
PROBE_VALUES = ("true", "false", "http://probe.invalid:4200/api")


def _changes_prefect_settings(name: str, values: Sequence[str]) -> bool:
    from prefect.settings import Settings
    from pydantic import ValidationError

    saved = os.environ.pop(name, None)
    try:
        before = Settings().model_dump()
        for value in values:
            os.environ[name] = value
            try:
                if Settings().model_dump() != before:  # SecretStr compares by value
                    return True
            except ValidationError:
                continue
        return False
    finally:
        os.environ.pop(name, None)
        if saved is not None:
            os.environ[name] = saved


def check_variable(name: str, value: str | None = None, *, image: str | None = None) -> None:
    """Raise AssertionError unless whatever runs in the container reads ``name``.

    Without a ``value`` (a name in prose), a Prefect variable must take effect with one of
    :data:`PROBE_VALUES`.
    """
    if image is not None and name in IMAGE_VARIABLES.get(image.split(":")[0], set()):
        return
    if name in tuneops_variables() or name.startswith("TUNEOPS_"):
        ok = name in tuneops_variables()
    elif name.startswith("PREFECT_"):
        ok = _changes_prefect_settings(name, PROBE_VALUES if value is None else (value,))
    elif name.startswith(("MLFLOW_", "AZURE_STORAGE_")) or name == "DO_NOT_TRACK":
        ok = _read_by("mlflow", name)
    elif name.startswith("AWS_"):
        ok = _read_by("botocore", name)
    else:
        ok = False
    if not ok:
        raise AssertionError(
            f"environment variable {name} is read by nothing that runs here"
            + (" (or sets Prefect's default)" if name.startswith("PREFECT_") else "")
        )


def failures(check: object, items: Iterable[object]) -> list[str]:
    """Run ``check(*item)`` for each item; the AssertionError messages (empty when all pass)."""
    found = []
    for item in items:
        try:
            check(*item)  # type: ignore[operator]
        except AssertionError as exc:
            found.append(str(exc))
    return found
