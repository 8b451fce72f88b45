"""The state database: one SQLAlchemy engine factory for the ledger, request log and rollout state.

The embedded default is SQLite under ``.tuneops/state.db``; at scale it is PostgreSQL
(``postgresql+psycopg2://``). SQLite gets WAL and a busy timeout so the CLI, the gateway and a
flow can share the file without "database is locked" errors. Each area declares its tables on
its own ``MetaData`` and calls :func:`create_tables`, which is idempotent. Nothing here runs at
import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from tuneops.errors import StoreError

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def normalise_url(url: str) -> str:
    """Pin the PostgreSQL driver to psycopg2 (SQLAlchemy 2.1 would pick psycopg 3, not installed)."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    """An engine for the state database at ``url``; creates the SQLite file's folder if needed.

    Raises:
        StoreError: the URL is malformed or names a backend we do not support.
    """
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(
            f"state database URL {url!r} is not valid", hint="check TUNEOPS_STATE_DB_URL"
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        return sa.create_engine(url, pool_pre_ping=True)
    raise StoreError(
        f"state database URL {url!r} uses {backend!r}",
        hint="use sqlite:///PATH (default) or postgresql+psycopg2://USER@HOST/DB",
    )


def create_tables(engine: Engine, metadata: sa.MetaData) -> None:
    """Create the tables of ``metadata`` that do not exist yet (safe to call on every start).

    Two processes racing to create the same table is tolerated: the loser sees it exists.
    """
    try:
        metadata.create_all(engine, checkfirst=True)
    except SQLAlchemyError as exc:
        missing = [t.name for t in metadata.sorted_tables if not sa.inspect(engine).has_table(t.name)]
        if missing:
            raise StoreError(f"cannot create state tables {missing}: {exc}") from exc


def describe(engine: Engine) -> str:
    """The engine's URL without its password, for messages and logs."""
    return engine.url.render_as_string(hide_password=True)
