"""The promotion ledger on real SQLite (WAL) and real PostgreSQL: append-only, ordered, locked."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tuneops.errors import StoreError
from tuneops.registry.ledger import Ledger, current_actor, ledger_table
from tuneops.registry.types import AliasMove
from tuneops.statedb import make_engine


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'nested' / 'state.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = Ledger.open(url)
    Ledger.open(url).close()  # opening twice is idempotent (tables, triggers)
    yield opened
    opened.close()


def test_sqlite_state_db_uses_wal_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a' / 'state.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    engine.dispose()


def test_unsupported_state_db_urls_are_user_errors() -> None:
    with pytest.raises(StoreError, match="mysql"):
        make_engine("mysql://x/y")
    with pytest.raises(StoreError, match="not valid"):
        make_engine("::nonsense")


def test_appends_are_read_back_in_order(any_ledger: Ledger, request: pytest.FixtureRequest) -> None:
    model = f"m-{request.node.callspec.id}-{id(any_ledger)}"
    with any_ledger.lock(model) as conn:
        first = any_ledger.append(
            conn, model, AliasMove("champion", None, "1"), actor="a", reason="r", source="cli"
        )
        any_ledger.append(
            conn, model, AliasMove("challenger", None, "2"), actor="b", reason="r2", source="flow"
        )
    with any_ledger.lock(model) as conn:
        any_ledger.append(
            conn, model, AliasMove("champion", "1", "2"), actor="c", reason="r3", source="reconcile"
        )
    rows = any_ledger.history(model)
    assert [(e.alias, e.from_version, e.to_version, e.actor) for e in rows] == [
        ("champion", None, "1", "a"),
        ("challenger", None, "2", "b"),
        ("champion", "1", "2", "c"),
    ]
    assert rows[0] == first and rows[0].at.tzinfo is not None
    assert [e.to_version for e in any_ledger.history(model, "champion")] == ["1", "2"]
    assert model in any_ledger.models()


def test_the_database_refuses_updates_and_deletes(any_ledger: Ledger) -> None:
    with any_ledger.lock("m-frozen") as conn:
        any_ledger.append(
            conn, "m-frozen", AliasMove("champion", None, "1"), actor="a", reason="r", source="cli"
        )
    for statement in (
        ledger_table.update().where(ledger_table.c.model == "m-frozen").values(reason="rewritten"),
        ledger_table.delete().where(ledger_table.c.model == "m-frozen"),
    ):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), any_ledger.engine.begin() as conn:
            conn.execute(statement)
    assert [e.reason for e in any_ledger.history("m-frozen")] == ["r"]


def test_a_failed_transaction_appends_nothing(any_ledger: Ledger) -> None:
    with pytest.raises(RuntimeError), any_ledger.lock("m-rollback") as conn:
        any_ledger.append(
            conn, "m-rollback", AliasMove("champion", None, "1"), actor="a", reason="r", source="cli"
        )
        raise RuntimeError("crash before commit")
    assert any_ledger.history("m-rollback") == []


def test_intents_stay_open_until_a_ledger_row_consumes_them(any_ledger: Ledger) -> None:
    with any_ledger.lock("m-intent") as conn:
        intent = any_ledger.record_intent(
            conn, "m-intent", "champion", "1", actor="a", reason="r", source="cli"
        )
    assert [i.id for i in any_ledger.open_intents("m-intent")] == [intent.id]
    with any_ledger.lock("m-intent") as conn:
        any_ledger.append(
            conn,
            "m-intent",
            AliasMove("champion", None, "1"),
            actor="a",
            reason="r",
            source="cli",
            intent_id=intent.id,
        )
    assert any_ledger.open_intents("m-intent") == []


def test_the_lock_serialises_writers(any_ledger: Ledger) -> None:
    """Eight threads each read the last version and append the next: no two read the same one."""
    model = "m-lock"

    def bump() -> None:
        with any_ledger.lock(model) as conn:
            last = any_ledger.history(model, conn=conn)
            n = int(last[-1].to_version or 0) if last else 0
            any_ledger.append(
                conn,
                model,
                AliasMove("champion", str(n) if n else None, str(n + 1)),
                actor="t",
                reason="r",
                source="cli",
            )

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.to_version for e in any_ledger.history(model)] == [str(i) for i in range(1, 9)]


def test_the_actor_is_tuneops_actor_else_the_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """One answer to "who did this" for the CLI, flows and the ledger."""
    import getpass

    monkeypatch.setenv("TUNEOPS_ACTOR", "ci-bot (for alice)")
    assert current_actor() == "ci-bot (for alice)"
    monkeypatch.setenv("TUNEOPS_ACTOR", "  ")
    assert current_actor() == getpass.getuser()
    monkeypatch.delenv("TUNEOPS_ACTOR")
    monkeypatch.setenv("LOGNAME", "bob")
    assert current_actor() == "bob"
