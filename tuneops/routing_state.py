"""Rollout state in the state database: each model's challenger weight, and the history of routing.

``routing_state`` holds one mutable row per model: the challenger's weight (basis points,
0..10,000), the version that weight was granted to, the strategy and the experiment id. The
weight is bound to a version so a challenger alias moved to a new version never inherits its
predecessor's traffic: it gets 0 until a rollout grants it a weight (:meth:`RolloutState.weight_for`).

``routing_changes`` is append-only: every weight change and every alias move the gateway
observes appends a full snapshot (champion, challenger, effective weight, strategy) with its
time, so lineage answers "which versions served with what share at T" from one row
(:func:`routing_at`). Writers take a per-model row lock and append only when something changed,
so repeated calls and racing gateway replicas add nothing twice.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from tuneops.append_only import UtcDateTime, as_utc, insert_ignoring_duplicates, open_history_tables, utcnow
from tuneops.errors import StoreError
from tuneops.statedb import describe

FULL_WEIGHT = 10_000  # basis points; the gateway's bucket count (tuneops.serving.gateway.assignment)
STRATEGIES = ("shadow", "blue-green", "canary", "ab")
DEFAULT_STRATEGY = "canary"
ChangeCause = Literal["rollout", "alias"]

metadata = sa.MetaData()

state_table = sa.Table(
    "routing_state",
    metadata,
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("challenger_version", sa.String(32), nullable=True),
    sa.Column("weight", sa.Integer, nullable=False, default=0),
    sa.Column("strategy", sa.String(16), nullable=False, default=DEFAULT_STRATEGY),
    sa.Column("experiment_id", sa.String(128), nullable=False, default=""),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint(f"weight >= 0 AND weight <= {FULL_WEIGHT}", name="routing_state_weight_range"),
)

changes_table = sa.Table(
    "routing_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("cause", sa.String(16), nullable=False),
    sa.Column("champion", sa.String(32), nullable=True),
    sa.Column("challenger", sa.String(32), nullable=True),
    sa.Column("weight", sa.Integer, nullable=False),
    sa.Column("strategy", sa.String(16), nullable=False),
    sa.Column("experiment_id", sa.String(128), nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Index("routing_changes_model_at", "model", "at"),
)


@dataclass(frozen=True)
class RolloutState:
    """One model's rollout settings; ``weight`` applies only to ``challenger_version``."""

    model: str
    challenger_version: str | None = None
    weight: int = 0
    strategy: str = DEFAULT_STRATEGY
    experiment_id: str = ""
    updated_at: datetime | None = None

    def weight_for(self, challenger: str | None) -> int:
        """The effective weight of ``challenger``: 0 unless the weight was granted to it."""
        return self.weight if challenger is not None and challenger == self.challenger_version else 0


@dataclass(frozen=True)
class RoutingSnapshot:
    """How a model was routed from ``at`` until the next change; ``weight`` is effective."""

    model: str
    at: datetime
    cause: ChangeCause
    champion: str | None
    challenger: str | None
    weight: int
    strategy: str
    experiment_id: str
    actor: str
    reason: str

    def shares(self) -> dict[str, float]:
        """Share of answered traffic per version (shadow copies answer nobody)."""
        if self.champion is None:
            return {}
        challenger, share = self.challenger, self.weight / FULL_WEIGHT
        if challenger is None or challenger == self.champion or share == 0 or self.strategy == "shadow":
            return {self.champion: 1.0}
        return {self.champion: 1.0 - share, challenger: share} if share < 1 else {challenger: 1.0}

    def _routing(self) -> tuple[object, ...]:
        return (self.champion, self.challenger, self.weight, self.strategy, self.experiment_id)


@dataclass(frozen=True)
class RolloutChange:
    """The result of :meth:`RoutingState.set_rollout`: the state now, and whether it changed."""

    state: RolloutState
    changed: bool


def routing_at(history: Sequence[RoutingSnapshot], t: datetime) -> RoutingSnapshot | None:
    """The snapshot in force at ``t``: the last one at or before it (``history`` oldest first)."""
    times = [snapshot.at for snapshot in history]
    index = bisect_right(times, as_utc(t))
    return history[index - 1] if index else None


def _state(row: sa.Row[Any] | None, model: str) -> RolloutState:
    if row is None:
        return RolloutState(model)
    m = row._mapping
    return RolloutState(
        model, m["challenger_version"], m["weight"], m["strategy"], m["experiment_id"], m["updated_at"]
    )


def _snapshot(row: sa.Row[Any]) -> RoutingSnapshot:
    m = row._mapping
    return RoutingSnapshot(
        m["model"], m["at"], m["cause"], m["champion"], m["challenger"], m["weight"], m["strategy"],
        m["experiment_id"], m["actor"], m["reason"],
    )  # fmt: skip


class RoutingState:
    """Rollout state and routing history of one state database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> RoutingState:
        """Connect to the state database at ``url``; create the tables and triggers if needed."""
        return cls(open_history_tables(url, metadata, [changes_table.name]))

    def close(self) -> None:
        self.engine.dispose()

    def get(self, model: str) -> RolloutState:
        """The rollout state of ``model`` (weight 0, default strategy when none was ever set)."""
        with self._connect() as conn:
            return _state(
                conn.execute(state_table.select().where(state_table.c.model == model)).first(), model
            )

    def set_rollout(
        self,
        model: str,
        *,
        challenger_version: str | None,
        weight: int,
        strategy: str | None = None,
        experiment_id: str | None = None,
        actor: str,
        reason: str = "",
        at: datetime | None = None,
    ) -> RolloutChange:
        """Grant ``challenger_version`` ``weight`` basis points; ``None`` keeps strategy/experiment.

        Idempotent: setting what is already set changes nothing and appends no history.
        """
        if not 0 <= weight <= FULL_WEIGHT:
            raise ValueError(f"weight is in basis points (0..{FULL_WEIGHT}), not {weight}")
        if strategy is not None and strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
        when = as_utc(at or utcnow())
        with self._locked(model) as conn:
            current = _state(
                conn.execute(state_table.select().where(state_table.c.model == model)).first(), model
            )
            wanted = replace(
                current,
                challenger_version=challenger_version,
                weight=weight,
                strategy=strategy or current.strategy,
                experiment_id=current.experiment_id if experiment_id is None else experiment_id,
                updated_at=when,
            )
            if replace(wanted, updated_at=current.updated_at) == current:
                return RolloutChange(current, changed=False)
            conn.execute(
                state_table.update().where(state_table.c.model == model).values(
                    challenger_version=wanted.challenger_version, weight=wanted.weight,
                    strategy=wanted.strategy, experiment_id=wanted.experiment_id, updated_at=when,
                )
            )  # fmt: skip
            last = self._last(conn, model)
            champion, challenger = (last.champion, last.challenger) if last else (None, None)
            self._append_if_changed(
                conn, last, model, when, "rollout", champion, challenger, wanted, actor, reason
            )
            return RolloutChange(wanted, changed=True)

    def observe_aliases(
        self,
        model: str,
        champion: str | None,
        challenger: str | None,
        *,
        actor: str,
        reason: str = "",
        at: datetime | None = None,
    ) -> RoutingSnapshot | None:
        """Record the aliases a gateway saw; returns the appended snapshot, or None if nothing moved."""
        when = as_utc(at or utcnow())
        with self._locked(model) as conn:
            state = _state(
                conn.execute(state_table.select().where(state_table.c.model == model)).first(), model
            )
            last = self._last(conn, model)
            return self._append_if_changed(
                conn, last, model, when, "alias", champion, challenger, state, actor, reason
            )

    def history(self, model: str) -> list[RoutingSnapshot]:
        """Every routing snapshot of ``model``, oldest first."""
        query = changes_table.select().where(changes_table.c.model == model)
        with self._connect() as conn:
            return [
                _snapshot(r) for r in conn.execute(query.order_by(changes_table.c.at, changes_table.c.id))
            ]

    def routing_at(self, model: str, t: datetime) -> RoutingSnapshot | None:
        """How ``model`` was routed at ``t`` (None before the first recorded change)."""
        query = (
            changes_table.select()
            .where(changes_table.c.model == model, changes_table.c.at <= as_utc(t))
            .order_by(changes_table.c.at.desc(), changes_table.c.id.desc())
            .limit(1)
        )
        with self._connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _snapshot(row)

    def _append_if_changed(
        self, conn: Connection, last: RoutingSnapshot | None, model: str, when: datetime, cause: ChangeCause,
        champion: str | None, challenger: str | None, state: RolloutState, actor: str, reason: str,
    ) -> RoutingSnapshot | None:  # fmt: skip
        snapshot = RoutingSnapshot(
            model, when, cause, champion, challenger, state.weight_for(challenger), state.strategy,
            state.experiment_id, actor, reason,
        )  # fmt: skip
        if last is not None and last._routing() == snapshot._routing():
            return None
        conn.execute(changes_table.insert().values(**asdict(snapshot)))
        return snapshot

    def _last(self, conn: Connection, model: str) -> RoutingSnapshot | None:
        query = changes_table.select().where(changes_table.c.model == model)
        row = conn.execute(
            query.order_by(changes_table.c.at.desc(), changes_table.c.id.desc()).limit(1)
        ).first()
        return None if row is None else _snapshot(row)

    @contextmanager
    def _locked(self, model: str) -> Iterator[Connection]:
        """A transaction holding ``model``'s state row (created if missing) for update."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert_ignoring_duplicates(conn, state_table, ["model"]).values(
                        model=model,
                        weight=0,
                        strategy=DEFAULT_STRATEGY,
                        experiment_id="",
                        updated_at=utcnow(),
                    )
                )
                conn.execute(
                    state_table.update().where(state_table.c.model == model).values(model=state_table.c.model)
                )
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"routing state in {describe(self.engine)} failed: {exc}") from exc

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the routing state in {describe(self.engine)}: {exc}") from exc
