"""Database templates: a new project's MLflow/Prefect database starts as a copy of a migrated one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tuneops import state_templates
from tuneops.state_templates import MLFLOW, save_template, seed_database, template_path


@pytest.fixture(autouse=True)
def machine_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own machine cache: the real one is never read or written."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def new_mlflow_database(path: Path) -> Path:
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments(max_results=1)
    return path


def tables(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'index')"))


def test_without_a_template_nothing_is_seeded(tmp_path: Path, machine_cache: Path):
    target = tmp_path / "project" / "mlflow.db"
    assert seed_database(MLFLOW, target) is False
    assert not target.exists()
    assert template_path(MLFLOW).is_relative_to(machine_cache)


def test_a_seeded_mlflow_database_has_the_schema_and_its_own_default_experiment(tmp_path: Path):
    first = new_mlflow_database(tmp_path / "first" / "mlflow.db")
    save_template(MLFLOW, first)
    assert template_path(MLFLOW).is_file()

    target = tmp_path / "second" / "mlflow.db"
    assert seed_database(MLFLOW, target) is True
    assert tables(target) == tables(first)
    with sqlite3.connect(target) as db:  # the first project's Default experiment is not carried over
        assert db.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,)

    client = MlflowClient(tracking_uri=f"sqlite:///{target}")
    default = client.get_experiment("0")  # MLflow re-creates it on open, for this project
    assert default.name == "Default"
    experiment = client.create_experiment("claims-triage", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "f1", 0.5)
    assert client.get_run(run.info.run_id).data.metrics == {"f1": 0.5}


def test_an_existing_database_is_never_replaced(tmp_path: Path):
    save_template(MLFLOW, new_mlflow_database(tmp_path / "t" / "mlflow.db"))
    target = tmp_path / "project" / "mlflow.db"
    target.parent.mkdir()
    target.write_bytes(b"the project's own data")
    assert seed_database(MLFLOW, target) is False
    assert target.read_bytes() == b"the project's own data"


def test_a_template_of_another_library_version_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    save_template(MLFLOW, new_mlflow_database(tmp_path / "t" / "mlflow.db"))
    monkeypatch.setattr(state_templates.metadata, "version", lambda name: "999.0")
    assert seed_database(MLFLOW, tmp_path / "project" / "mlflow.db") is False


def test_the_first_template_is_kept(tmp_path: Path):
    save_template(MLFLOW, new_mlflow_database(tmp_path / "a" / "mlflow.db"))
    before = template_path(MLFLOW).read_bytes()
    other = new_mlflow_database(tmp_path / "b" / "mlflow.db")
    MlflowClient(tracking_uri=f"sqlite:///{other}").create_experiment("not-empty")
    save_template(MLFLOW, other)
    assert template_path(MLFLOW).read_bytes() == before


def test_an_unreadable_source_leaves_no_template(tmp_path: Path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    save_template(MLFLOW, garbage)
    assert not template_path(MLFLOW).exists()
    assert not list(template_path(MLFLOW).parent.glob("*"))  # no partial file either
