"""Promotion and reconciliation: move aliases in MLflow and keep the ledger in step with them.

One mechanism serves every path. ``promote`` records an *intent* per planned move, moves the
aliases in MLflow, then calls :func:`reconcile`, which compares MLflow's aliases with the
ledger's last known state and appends a row for each difference, attributed to the matching
intent when there is one and to "unknown (observed)" otherwise. So:

- a move made in the MLflow UI or API is recorded the next time anything reconciles
  (``tuneops promote``/``lineage``/``ledger``, the webhook receiver, the gateway's refresh);
- a promotion killed between moving the alias and writing the ledger is repaired by that same
  reconciliation, with its real actor and reason, because its intent survived.
"""

from __future__ import annotations

from tuneops.errors import PromotionRefusedError, VersionNotFoundError
from tuneops.registry.conventions import (
    CHAMPION,
    GATE_PASSED,
    OBSERVED_ACTOR,
    PREVIOUS,
    diff_aliases,
    last_known,
    match_intent,
    plan_promotion,
)
from tuneops.registry.ledger import Ledger, current_actor
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.types import LedgerEntry, PromotionResult

OBSERVED_REASON = "alias move observed in MLflow, not made through tuneops"


def reconcile(
    store: RegistryStore,
    ledger: Ledger,
    model: str,
    *,
    source: str = "reconcile",
    actor: str = OBSERVED_ACTOR,
    reason: str = OBSERVED_REASON,
) -> list[LedgerEntry]:
    """Append ledger rows for alias moves MLflow shows but the ledger lacks; return them.

    Safe to run concurrently: MLflow and the ledger are both read under the per-model lock, so
    two reconcilers never record the same move twice nor a stale state as a move.
    """
    appended: list[LedgerEntry] = []
    with ledger.lock(model) as conn:
        # Observe MLflow while holding the lock: an observation taken before it could be older than
        # a ledger row another process appends meanwhile, and would "undo" that move on paper.
        observed = store.aliases(model)
        entries = ledger.history(model, conn=conn)
        moves = diff_aliases(observed, last_known(entries))
        if not moves:
            return []
        intents = ledger.open_intents(model, conn=conn)
        matched = []
        for move in moves:
            intent = match_intent(move, intents, entries)
            if intent is not None:
                intents = [i for i in intents if i.id != intent.id]
            matched.append((move, intent))
        # a promotion's moves are appended in the order it planned them (its intents' order)
        matched.sort(key=lambda pair: pair[1].id if pair[1] is not None else float("inf"))
        for move, intent in matched:
            if intent is not None:
                entry = ledger.append(
                    conn,
                    model,
                    move,
                    actor=intent.actor,
                    reason=intent.reason,
                    source=intent.source,
                    intent_id=intent.id,
                )
            else:
                entry = ledger.append(conn, model, move, actor=actor, reason=reason, source=source)
            appended.append(entry)
    return appended


def promote(
    store: RegistryStore,
    ledger: Ledger,
    model: str,
    version: str,
    alias: str,
    *,
    reason: str,
    force: bool = False,
    actor: str | None = None,
    source: str = "cli",
) -> PromotionResult:
    """Put ``alias`` on ``version`` of ``model`` following the promotion rules; ledger every move.

    Raises:
        VersionNotFoundError: no such model version.
        PromotionRefusedError: a rule refused (gate not passed without ``force``, unknown alias,
            no reason); nothing was changed.
        RegistryError: MLflow or the state database failed.
    """
    reconciled = reconcile(store, ledger, model)
    version = str(version)
    try:
        target = store.get_version(model, version)
    except VersionNotFoundError as exc:
        raise VersionNotFoundError(
            f"model {model!r} has no version {version}", hint=f"list them with 'tuneops ledger {model}'"
        ) from exc
    decision = plan_promotion(
        alias=alias,
        to_version=version,
        current=store.aliases(model),
        gate=target.gate,
        force=force,
        reason=reason,
    )
    if not decision.allowed:
        raise PromotionRefusedError(f"{model}@{alias} -> {version} refused: {decision.refusal}")
    if not decision.moves:
        return PromotionResult(model, alias, version, (), (), tuple(reconciled))
    who = actor or current_actor()
    forced = alias == CHAMPION and target.gate != GATE_PASSED
    with ledger.lock(model) as conn:
        for move in decision.moves:
            why = reason if move.alias == alias else f"follows {alias} -> {version}: {reason}"
            if forced:
                why = f"[forced: gate {target.gate or 'not recorded'}] {why}"
            ledger.record_intent(
                conn, model, move.alias, move.to_version, actor=who, reason=why, source=source
            )
    for move in decision.moves:
        store.set_alias(model, move.alias, move.to_version)
    entries = reconcile(store, ledger, model)
    return PromotionResult(model, alias, version, decision.moves, tuple(entries), tuple(reconciled))


def rollback(
    store: RegistryStore,
    ledger: Ledger,
    model: str,
    *,
    reason: str,
    actor: str | None = None,
    source: str = "cli",
) -> PromotionResult:
    """Make ``previous`` the champion again (the old champion becomes ``previous``): instant rollback.

    A rollback returns to a version that already served as champion, so the gate guard does not
    apply; it is recorded like any other promotion.

    Raises:
        PromotionRefusedError: there is no ``previous`` to return to.
    """
    reconcile(store, ledger, model)
    target = store.aliases(model).get(PREVIOUS)
    if target is None:
        raise PromotionRefusedError(f"{model} has no '{PREVIOUS}' version to roll back to")
    return promote(
        store,
        ledger,
        model,
        target,
        CHAMPION,
        reason=f"rollback: {reason}",
        force=True,
        actor=actor,
        source=source,
    )
