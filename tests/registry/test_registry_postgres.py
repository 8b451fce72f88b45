"""The at-scale column for this area: MLflow's registry and the ledger both on PostgreSQL.

PostgreSQL enforces column sizes SQLite ignores (MLflow's dataset digest is VARCHAR(36)), so
registration, promotion and lineage run here for real.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tuneops.registry.conventions import ModelRef
from tuneops.registry.ledger import Ledger
from tuneops.registry.lineage import build_lineage
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.promotion import promote

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def pg_tracking_uri(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for MLflow (its own, so migrations never meet other tables)."""
    admin = sa.create_engine(postgres_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    name = f"tuneops_mlflow_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def store(pg_tracking_uri: str, tmp_path: Path) -> RegistryStore:
    """Overrides the SQLite store of the registry fixtures."""
    return RegistryStore(pg_tracking_uri, (tmp_path / "artifacts").as_uri())


@pytest.fixture
def ledger(postgres_url: str) -> Iterator[Ledger]:
    opened = Ledger.open(postgres_url)
    yield opened
    opened.close()


def test_register_promote_and_trace_on_postgres(
    build_version: Any, store: RegistryStore, ledger: Ledger
) -> None:
    name = f"pg-bot-{uuid.uuid4().hex[:6]}"
    built = build_version(name=name, job_id="pg-1")
    assert build_version(name=name, job_id="pg-1").version.version == built.version.version  # idempotent
    promote(store, ledger, name, built.version.version, "champion", reason="at scale")
    lineage = build_lineage(store, ledger, ModelRef(name, "champion"))
    assert lineage.finetune.job_id == "pg-1"
    assert {s.split: s.sha256 for s in lineage.dataset.splits} == {
        k: v["sha256"] for k, v in built.manifest["splits"].items()
    }
    assert [(e.alias, e.to_version, e.reason) for e in lineage.ledger] == [("champion", "1", "at scale")]
