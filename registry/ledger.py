"""The promotion ledger: an append-only record of every alias move, in the state database.

MLflow keeps no alias history (mlflow/mlflow#2169), so this table is how lineage answers "what
was champion on date X". There is no update or delete API, and the database refuses both too
(a trigger on SQLite and PostgreSQL). A second table holds *intents*: a promotion is written
down before MLflow is touched, so a crash between moving an alias and appending its row is
repaired by reconciliation with the real actor and reason.

Writers that must not interleave (promote, reconcile) take :meth:`Ledger.lock`, a row lock per
model that works the same on SQLite (write lock until commit) and PostgreSQL (row lock).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from tuneops.append_only import as_utc, insert_ignoring_duplicates, open_history_tables, utcnow
from tuneops.errors import RegistryError, StoreError
from tuneops.registry.types import AliasMove, LedgerEntry, PromotionIntent
from tuneops.statedb import describe

__all__ = ["APPEND_ONLY_TABLES", "Ledger", "current_actor", "utcnow"]

metadata = sa.MetaData()

ledger_table = sa.Table(
    "promotion_ledger",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(256), nullable=False, index=True),
    sa.Column("alias", sa.String(256), nullable=False),
    sa.Column("from_version", sa.String(32)),
    sa.Column("to_version", sa.String(32)),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("intent_id", sa.Integer, nullable=True),
)

intent_table = sa.Table(
    "promotion_intents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(256), nullable=False, index=True),
    sa.Column("alias", sa.String(256), nullable=False),
    sa.Column("to_version", sa.String(32)),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

APPEND_ONLY_TABLES = ("promotion_ledger", "promotion_intents")
"""The database refuses UPDATE and DELETE on these (:mod:`tuneops.append_only`)."""

lock_table = sa.Table(
    "promotion_locks",
    metadata,
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("counter", sa.Integer, nullable=False, default=0),
)

ACTOR_ENV = "TUNEOPS_ACTOR"


def current_actor() -> str:
    """Who is running this process, for ledger rows written by the CLI or a flow.

    ``TUNEOPS_ACTOR`` first (a Prefect worker or CI job runs as a service user, so its deployment
    names the person or system it acts for), then the OS user.
    """
    named = os.environ.get(ACTOR_ENV, "").strip()
    if named:
        return named
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _entry(row: sa.Row) -> LedgerEntry:
    m = row._mapping
    return LedgerEntry(
        id=m["id"],
        model=m["model"],
        alias=m["alias"],
        from_version=m["from_version"],
        to_version=m["to_version"],
        actor=m["actor"],
        reason=m["reason"],
        source=m["source"],
        at=as_utc(m["at"]),
        intent_id=m["intent_id"],
    )


def _intent(row: sa.Row) -> PromotionIntent:
    m = row._mapping
    return PromotionIntent(
        id=m["id"],
        model=m["model"],
        alias=m["alias"],
        to_version=m["to_version"],
        actor=m["actor"],
        reason=m["reason"],
        source=m["source"],
        at=as_utc(m["at"]),
    )


def _insert(conn: Connection, table: sa.Table, **values: object) -> int:
    inserted = conn.execute(table.insert().values(**values)).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


class Ledger:
    """Append-only access to the promotion ledger of one state database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> Ledger:
        """Connect to the state database at ``url`` and make sure the ledger tables exist."""
        try:
            engine = open_history_tables(url, metadata, append_only=APPEND_ONLY_TABLES)
        except StoreError as exc:
            raise RegistryError(f"cannot prepare the promotion ledger: {exc.one_line()}") from exc
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def lock(self, model: str) -> Iterator[Connection]:
        """A transaction holding the per-model promotion lock; appends inside it commit together."""
        try:
            with self.engine.begin() as conn:
                insert = insert_ignoring_duplicates(conn, lock_table, ["model"])
                conn.execute(insert.values(model=model, counter=0))
                conn.execute(
                    lock_table.update()
                    .where(lock_table.c.model == model)
                    .values(counter=lock_table.c.counter + 1)
                )
                yield conn
        except SQLAlchemyError as exc:
            raise RegistryError(f"promotion ledger in {describe(self.engine)} failed: {exc}") from exc

    def append(
        self,
        conn: Connection,
        model: str,
        move: AliasMove,
        *,
        actor: str,
        reason: str,
        source: str,
        at: datetime | None = None,
        intent_id: int | None = None,
    ) -> LedgerEntry:
        """Append one alias move inside ``conn`` (from :meth:`lock`) and return the stored row."""
        when = at or utcnow()
        new_id = _insert(
            conn,
            ledger_table,
            model=model, alias=move.alias, from_version=move.from_version, to_version=move.to_version,
            actor=actor, reason=reason, source=source, at=when, intent_id=intent_id,
        )  # fmt: skip
        return LedgerEntry(
            id=new_id, model=model, alias=move.alias, from_version=move.from_version,
            to_version=move.to_version, actor=actor, reason=reason, source=source, at=as_utc(when),
            intent_id=intent_id,
        )  # fmt: skip

    def record_intent(
        self,
        conn: Connection,
        model: str,
        alias: str,
        to_version: str | None,
        *,
        actor: str,
        reason: str,
        source: str,
    ) -> PromotionIntent:
        """Write down a promotion before MLflow is touched (see the module docstring)."""
        when = utcnow()
        new_id = _insert(
            conn, intent_table, model=model, alias=alias, to_version=to_version, actor=actor, reason=reason,
            source=source, at=when,
        )  # fmt: skip
        return PromotionIntent(
            id=new_id, model=model, alias=alias, to_version=to_version, actor=actor, reason=reason,
            source=source, at=when,
        )  # fmt: skip

    def history(
        self, model: str, alias: str | None = None, conn: Connection | None = None
    ) -> list[LedgerEntry]:
        """Every ledger row of ``model`` (optionally one alias), oldest first."""
        query = ledger_table.select().where(ledger_table.c.model == model)
        if alias is not None:
            query = query.where(ledger_table.c.alias == alias)
        query = query.order_by(ledger_table.c.at, ledger_table.c.id)
        return [_entry(row) for row in self._rows(query, conn)]

    def open_intents(self, model: str, conn: Connection | None = None) -> list[PromotionIntent]:
        """Intents of ``model`` that no ledger row has consumed yet, newest first."""
        used = sa.select(ledger_table.c.intent_id).where(ledger_table.c.intent_id.is_not(None))
        query = (
            intent_table.select()
            .where(intent_table.c.model == model, intent_table.c.id.not_in(used))
            .order_by(intent_table.c.id.desc())
        )
        return [_intent(row) for row in self._rows(query, conn)]

    def models(self) -> list[str]:
        """Every model that has at least one ledger row."""
        query = sa.select(ledger_table.c.model).distinct().order_by(ledger_table.c.model)
        return [row[0] for row in self._rows(query, None)]

    def _rows(self, query: sa.Select, conn: Connection | None) -> list[sa.Row]:
        try:
            if conn is not None:
                return list(conn.execute(query))
            with self.engine.connect() as own:
                return list(own.execute(query))
        except SQLAlchemyError as exc:
            raise RegistryError(
                f"cannot read the promotion ledger in {describe(self.engine)}: {exc}"
            ) from exc
