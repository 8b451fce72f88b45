"""Empty, fully migrated SQLite databases, built once per machine, that new projects start from.

A new project's first ``tuneops run`` used to spend most of its overhead creating schemas:
Prefect's server runs a hundred-odd migrations on a new database (10-15 s on two cores) and
MLflow a few dozen (2-3 s). Both results are the same for every project, so the first project
on a machine keeps a copy (taken with SQLite's backup API, consistent while the owner writes)
under ``~/.cache/tuneops/templates/`` (``$XDG_CACHE_HOME`` respected), named by the library
version that built it; later projects copy it instead of migrating. A template from another
version is never used: the library migrates a new database itself, and that one becomes the
template for the new version.

Only content every project would create identically is kept: MLflow's ``Default`` experiment
records the creating project's artifact path, so it is dropped (MLflow re-creates it on open).
Everything here is an optimisation: any failure falls back to the library creating the schema.
No library is imported here: opening an MLflow store through its template is
``tuneops.registry.mlflow_store.open_mlflow_store`` (only ``registry/`` speaks to MLflow).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from importlib import metadata
from pathlib import Path

PREFECT, MLFLOW = "prefect", "mlflow"
_CLEAN_UP = {
    MLFLOW: (
        "DELETE FROM experiment_tags WHERE experiment_id = 0",
        "DELETE FROM experiments WHERE experiment_id = 0",
    ),
    PREFECT: (),
}


def templates_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tuneops" / "templates"


def template_path(kind: str) -> Path:
    """Where the template for the installed version of ``kind`` (``prefect``/``mlflow``) lives."""
    return templates_dir() / f"{kind}-{metadata.version(kind)}.db"


def seed_database(kind: str, target: Path) -> bool:
    """Create ``target`` as a copy of the template when it does not exist; True if it was seeded."""
    if target.exists():
        return False
    try:
        template = template_path(kind)
        if not template.is_file():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        try:
            _backup(template, partial)
            os.link(partial, target)  # fails if another process created target meanwhile: keep theirs
        finally:
            partial.unlink(missing_ok=True)
    except (OSError, sqlite3.Error, metadata.PackageNotFoundError):
        return False
    return True


def save_template(kind: str, source: Path) -> None:
    """Keep a snapshot of ``source`` (a database the library just created) as the template."""
    with contextlib.suppress(OSError, sqlite3.Error, metadata.PackageNotFoundError):
        template = template_path(kind)
        if template.exists() or not source.is_file():
            return
        template.parent.mkdir(parents=True, exist_ok=True)
        partial = template.with_name(f".{template.name}.{uuid.uuid4().hex}")
        try:
            _backup(source, partial)
            with contextlib.closing(sqlite3.connect(partial)) as db:
                for statement in _CLEAN_UP[kind]:
                    db.execute(statement)
                db.commit()
                db.execute("VACUUM")
            partial.replace(template)
        finally:
            partial.unlink(missing_ok=True)


def _backup(source: Path, target: Path) -> None:
    source_uri = f"{source.resolve().as_uri()}?mode=ro"
    with (
        contextlib.closing(sqlite3.connect(source_uri, uri=True)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)
