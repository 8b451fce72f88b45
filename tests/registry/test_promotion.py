"""promote and reconcile against a real SQLite MLflow registry and a real ledger."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tuneops.errors import PromotionRefusedError, VersionNotFoundError
from tuneops.registry.conventions import OBSERVED_ACTOR
from tuneops.registry.ledger import Ledger
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.promotion import promote, reconcile, rollback

from .conftest import mlflow_client

M = "support-bot"


def moves(ledger: Ledger) -> list[tuple[str, str | None, str | None, str]]:
    return [(e.alias, e.from_version, e.to_version, e.source) for e in ledger.history(M)]


def test_promotion_moves_aliases_and_ledgers_every_move(
    build_version: Any, store: RegistryStore, ledger: Ledger
) -> None:
    v1, v2 = build_version(job_id="j1"), build_version(job_id="j2", seed="v2")
    assert (v1.version.version, v2.version.version) == ("1", "2")
    promote(store, ledger, M, "1", "champion", reason="first release", actor="alice")
    promote(store, ledger, M, "2", "challenger", reason="new data", actor="alice")
    result = promote(store, ledger, M, "2", "champion", reason="won the canary", actor="bob")
    assert store.aliases(M) == {"champion": "2", "previous": "1"}
    assert [(m.alias, m.from_version, m.to_version) for m in result.moves] == [
        ("previous", None, "1"),
        ("champion", "1", "2"),
        ("challenger", "2", None),
    ]
    assert moves(ledger) == [
        ("champion", None, "1", "cli"),
        ("challenger", None, "2", "cli"),
        ("previous", None, "1", "cli"),
        ("champion", "1", "2", "cli"),
        ("challenger", "2", None, "cli"),
    ]
    last = {e.alias: e for e in ledger.history(M)}
    assert last["champion"].actor == "bob" and last["champion"].reason == "won the canary"
    assert "won the canary" in last["previous"].reason
    assert ledger.open_intents(M) == []


def test_promoting_again_changes_nothing(build_version: Any, store: RegistryStore, ledger: Ledger) -> None:
    build_version()
    promote(store, ledger, M, "1", "champion", reason="r")
    again = promote(store, ledger, M, "1", "champion", reason="r")
    assert not again.changed and len(ledger.history(M)) == 1


def test_champion_on_a_failed_gate_needs_force(
    build_version: Any, store: RegistryStore, ledger: Ledger
) -> None:
    build_version(gate_passed=False)
    with pytest.raises(PromotionRefusedError, match="--force"):
        promote(store, ledger, M, "1", "champion", reason="please")
    assert store.aliases(M) == {} and ledger.history(M) == []
    promote(store, ledger, M, "1", "champion", reason="hotfix, gate flaky", force=True)
    assert store.aliases(M) == {"champion": "1"}
    assert ledger.history(M)[0].reason.startswith("[forced: gate failed] hotfix")


def test_unknown_versions_are_named(build_version: Any, store: RegistryStore, ledger: Ledger) -> None:
    build_version()
    with pytest.raises(VersionNotFoundError, match="no version 7"):
        promote(store, ledger, M, "7", "challenger", reason="r")


def test_moves_made_outside_tuneops_are_observed(
    build_version: Any, store: RegistryStore, ledger: Ledger
) -> None:
    build_version(job_id="j1")
    build_version(job_id="j2", seed="v2")
    promote(store, ledger, M, "1", "champion", reason="r")
    mlflow_client(store).set_registered_model_alias(M, "champion", "2")  # what the MLflow UI does
    mlflow_client(store).set_registered_model_alias(M, "staging", "1")
    found = reconcile(store, ledger, M)
    assert [(e.alias, e.from_version, e.to_version, e.actor, e.source) for e in found] == [
        ("champion", "1", "2", OBSERVED_ACTOR, "reconcile"),
        ("staging", None, "1", OBSERVED_ACTOR, "reconcile"),
    ]
    assert reconcile(store, ledger, M) == []
    mlflow_client(store).delete_registered_model_alias(M, "staging")
    assert [(e.alias, e.to_version) for e in reconcile(store, ledger, M)] == [("staging", None)]


def test_a_crash_between_moving_the_alias_and_writing_the_ledger_is_repaired(
    build_version: Any, store: RegistryStore, ledger: Ledger
) -> None:
    """The intent survives the crash, so reconciliation records the real actor and reason."""
    build_version()
    with ledger.lock(M) as conn:
        ledger.record_intent(conn, M, "challenger", "1", actor="carol", reason="try v1", source="flow")
    store.set_alias(M, "challenger", "1")
    # ... process killed here ...
    (entry,) = reconcile(store, ledger, M)
    assert (entry.actor, entry.reason, entry.source, entry.to_version) == ("carol", "try v1", "flow", "1")


def test_concurrent_reconcilers_record_a_move_once(
    build_version: Any, store: RegistryStore, ledger: Ledger
) -> None:
    build_version()
    mlflow_client(store).set_registered_model_alias(M, "champion", "1")
    threads = [threading.Thread(target=reconcile, args=(store, ledger, M)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert moves(ledger) == [("champion", None, "1", "reconcile")]


def test_reconciling_a_model_that_does_not_exist_is_a_no_op(store: RegistryStore, ledger: Ledger) -> None:
    assert reconcile(store, ledger, "nobody") == []


def test_rollback_swaps_champion_and_previous(
    build_version: Any, store: RegistryStore, ledger: Ledger
) -> None:
    build_version(job_id="j1")
    build_version(job_id="j2", seed="v2")
    promote(store, ledger, M, "1", "champion", reason="r1")
    promote(store, ledger, M, "2", "champion", reason="r2")
    result = rollback(store, ledger, M, reason="error rate 4% on v2", actor="gateway", source="flow")
    assert store.aliases(M) == {"champion": "1", "previous": "2"}
    assert [(m.alias, m.to_version) for m in result.moves] == [("previous", "2"), ("champion", "1")]
    assert ledger.history(M, "champion")[-1].reason == "rollback: error rate 4% on v2"


def test_rollback_needs_a_previous(build_version: Any, store: RegistryStore, ledger: Ledger) -> None:
    build_version()
    promote(store, ledger, M, "1", "champion", reason="r1")
    with pytest.raises(PromotionRefusedError, match="no 'previous'"):
        rollback(store, ledger, M, reason="x")
