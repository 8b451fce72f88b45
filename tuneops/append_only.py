"""History tables in the state database: the database itself refuses to rewrite them.

Lineage and rollout verdicts are only as good as the records they read, so tables of history
(promotion ledger, request log, routing changes) have no update or delete API *and* triggers
that refuse ``UPDATE`` and ``DELETE`` (and ``TRUNCATE`` on PostgreSQL) on SQLite and PostgreSQL
alike. Appends that may be retried use :func:`insert_ignoring_duplicates` (``ON CONFLICT DO
NOTHING`` on both), and timestamps :class:`UtcDateTime`, which reads back as aware UTC on both
(SQLite drops the timezone).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from tuneops.errors import StoreError
from tuneops.statedb import create_tables, describe, make_engine

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PG_FUNCTION = (  # "%%": psycopg2 formats every statement, even one without parameters
    "CREATE OR REPLACE FUNCTION tuneops_refuse_change() RETURNS trigger AS $$ "
    "BEGIN RAISE EXCEPTION '%% is append-only', TG_TABLE_NAME; END; $$ LANGUAGE plpgsql"
)
_PG_LOCK = "SELECT pg_advisory_xact_lock(hashtext('tuneops_append_only'))"


def _sqlite_statements(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        for op in ("UPDATE", "DELETE")
    ]


def _postgres_statements(table: str) -> list[str]:
    return [
        f"CREATE OR REPLACE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION tuneops_refuse_change()",
        f"CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION tuneops_refuse_change()",
    ]


def open_history_tables(url: str, metadata: sa.MetaData, append_only: Sequence[str]) -> Engine:
    """An engine on the state database at ``url`` with ``metadata``'s tables, ``append_only`` guarded."""
    engine = make_engine(url)
    create_tables(engine, metadata)
    make_append_only(engine, append_only)
    return engine


def make_append_only(engine: Engine, tables: Sequence[str]) -> None:
    """Install the refusing triggers on ``tables`` (idempotent; safe for racing processes).

    On PostgreSQL an advisory lock serialises concurrent installers, which would otherwise
    collide in ``CREATE OR REPLACE`` ("tuple concurrently updated").

    Raises:
        StoreError: a table name is not a plain identifier, or the database refused.
    """
    for table in tables:
        if not _IDENTIFIER.fullmatch(table):
            raise StoreError(f"{table!r} is not a table name tuneops creates")
    try:
        with engine.begin() as conn:
            _install(conn, tables)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot make {list(tables)} append-only in {describe(engine)}: {exc}") from exc


def _install(conn: Connection, tables: Sequence[str]) -> None:
    if conn.dialect.name == "postgresql":
        statements = [_PG_LOCK, _PG_FUNCTION, *(s for t in tables for s in _postgres_statements(t))]
    else:
        statements = [s for t in tables for s in _sqlite_statements(t)]
    for statement in statements:
        conn.exec_driver_sql(statement)


def insert_ignoring_duplicates(
    conn: Connection, table: sa.Table, index_elements: Sequence[str]
) -> sqlite.Insert | postgresql.Insert:
    """An INSERT that skips rows clashing on the unique ``index_elements``: a replayed append is a no-op."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing(index_elements=list(index_elements))


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back timezone-aware on every backend.

    A naive value is taken to be UTC already (that is what SQLite hands back).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (naive values are taken to be UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)
