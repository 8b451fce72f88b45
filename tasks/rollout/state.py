"""Rollout progress in the state database, so a killed ``rollout`` flow resumes where it was.

``rollouts`` holds one mutable row per rollout: which challenger against which champion, the
strategy, the step it is in and since when, its status (``running``, ``awaiting-approval``,
``promoted``, ``rolled-back``, ``aborted``), the Prefect flow run driving it (the CLI resumes a
paused approval through it) and an abort request a user can set from the CLI.

``rollout_steps`` is append-only: one row per judged interval and per transition (the step table
``tuneops rollout status`` prints and the MLflow run logs), with the verdict as JSON.

A model has at most one unfinished rollout; :meth:`RolloutStore.begin` returns it instead of
starting another, which is what makes a re-run resume instead of restarting at the first step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from tuneops.append_only import UtcDateTime, as_utc, open_history_tables, utcnow
from tuneops.errors import StoreError
from tuneops.statedb import describe

Status = Literal["running", "awaiting-approval", "promoted", "rolled-back", "aborted"]
ACTIVE: tuple[Status, ...] = ("running", "awaiting-approval")

metadata = sa.MetaData()

rollouts_table = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(256), nullable=False, index=True),
    sa.Column("challenger_version", sa.String(32), nullable=False),
    sa.Column("champion_version", sa.String(32), nullable=True),
    sa.Column("strategy", sa.String(16), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("step_index", sa.Integer, nullable=False),
    sa.Column("step_started_at", UtcDateTime, nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("switched_at", UtcDateTime, nullable=True),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.Column("flow_run_id", sa.String(64), nullable=True),
    sa.Column("mlflow_run_id", sa.String(64), nullable=True),
    sa.Column("abort_requested", sa.Text, nullable=True),
    sa.Column("reason", sa.Text, nullable=False, default=""),
)

steps_table = sa.Table(
    "rollout_steps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rollout_id", sa.Integer, nullable=False, index=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("step_index", sa.Integer, nullable=False),
    sa.Column("step_name", sa.String(32), nullable=False),
    sa.Column("weight", sa.Integer, nullable=False),
    sa.Column("action", sa.String(24), nullable=False),
    sa.Column("challenger_requests", sa.Integer, nullable=False, default=0),
    sa.Column("champion_requests", sa.Integer, nullable=False, default=0),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("verdict", sa.Text, nullable=True),
)


@dataclass(frozen=True)
class RolloutRecord:
    """One rollout's durable progress."""

    id: int
    model: str
    challenger_version: str
    champion_version: str | None
    strategy: str
    status: Status
    step_index: int
    step_started_at: datetime
    started_at: datetime
    switched_at: datetime | None
    finished_at: datetime | None
    flow_run_id: str | None
    mlflow_run_id: str | None
    abort_requested: str | None
    reason: str

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


@dataclass(frozen=True)
class StepRow:
    """One line of the step table."""

    at: datetime
    step_index: int
    step_name: str
    weight: int
    action: str
    challenger_requests: int
    champion_requests: int
    summary: str
    verdict: dict[str, Any] | None


def _record(row: sa.Row[Any]) -> RolloutRecord:
    m = row._mapping
    return RolloutRecord(**{c.name: m[c.name] for c in rollouts_table.columns})


def _step(row: sa.Row[Any]) -> StepRow:
    m = row._mapping
    verdict = json.loads(m["verdict"]) if m["verdict"] else None
    return StepRow(m["at"], m["step_index"], m["step_name"], m["weight"], m["action"],
                   m["challenger_requests"], m["champion_requests"], m["summary"], verdict)  # fmt: skip


class RolloutStore:
    """Rollouts and their step tables in one state database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> RolloutStore:
        """Connect to the state database at ``url``; create the tables and triggers if needed."""
        return cls(open_history_tables(url, metadata, [steps_table.name]))

    def close(self) -> None:
        self.engine.dispose()

    def begin(
        self, model: str, challenger: str, champion: str | None, strategy: str, *, flow_run_id: str | None
    ) -> tuple[RolloutRecord, bool]:
        """The model's unfinished rollout of ``challenger`` (resumed), or a new one at step 0.

        Returns the record and whether it was resumed. An unfinished rollout of *another*
        challenger is finished as ``aborted`` first (its challenger alias moved on).
        """
        now = utcnow()
        with self._begin() as conn:
            for old in self._active(conn, model):
                if old.challenger_version == challenger:
                    conn.execute(rollouts_table.update().where(rollouts_table.c.id == old.id)
                                 .values(flow_run_id=flow_run_id or old.flow_run_id))  # fmt: skip
                    return self._get(conn, old.id), True
                self._finish(conn, old.id, "aborted", f"superseded by challenger {challenger}", now)
            new_id = conn.execute(
                rollouts_table.insert().values(
                    model=model, challenger_version=challenger, champion_version=champion, strategy=strategy,
                    status="running", step_index=0, step_started_at=now, started_at=now,
                    flow_run_id=flow_run_id, reason="",
                )
            ).inserted_primary_key[0]  # fmt: skip
            return self._get(conn, int(new_id)), False

    def get(self, rollout_id: int) -> RolloutRecord:
        with self._begin() as conn:
            return self._get(conn, rollout_id)

    def latest(self, model: str) -> RolloutRecord | None:
        """The model's most recent rollout, finished or not."""
        query = (
            rollouts_table.select()
            .where(rollouts_table.c.model == model)
            .order_by(rollouts_table.c.id.desc())
        )
        with self._begin() as conn:
            row = conn.execute(query.limit(1)).first()
        return None if row is None else _record(row)

    def active(self, model: str) -> RolloutRecord | None:
        with self._begin() as conn:
            found = self._active(conn, model)
        return found[0] if found else None

    def advance(self, rollout_id: int, step_index: int, *, switched: bool = False) -> RolloutRecord:
        """Move to ``step_index`` (its clock starts now); a no-op if already there."""
        with self._begin() as conn:
            current = self._get(conn, rollout_id)
            if current.step_index == step_index:
                return current
            values: dict[str, Any] = {"step_index": step_index, "step_started_at": utcnow()}
            if switched and current.switched_at is None:
                values["switched_at"] = values["step_started_at"]
            conn.execute(rollouts_table.update().where(rollouts_table.c.id == rollout_id).values(**values))
            return self._get(conn, rollout_id)

    def set_status(self, rollout_id: int, status: Status, reason: str = "") -> RolloutRecord:
        """Set the status; a finished status also stamps ``finished_at`` (only once)."""
        with self._begin() as conn:
            if status in ACTIVE:
                conn.execute(rollouts_table.update().where(rollouts_table.c.id == rollout_id)
                             .values(status=status))  # fmt: skip
            else:
                self._finish(conn, rollout_id, status, reason, utcnow())
            return self._get(conn, rollout_id)

    def set_mlflow_run(self, rollout_id: int, run_id: str) -> None:
        with self._begin() as conn:
            conn.execute(
                rollouts_table.update().where(rollouts_table.c.id == rollout_id).values(mlflow_run_id=run_id)
            )

    def request_abort(self, model: str, reason: str) -> RolloutRecord | None:
        """Ask the running rollout of ``model`` to stop at its next interval (None: nothing runs)."""
        with self._begin() as conn:
            found = self._active(conn, model)
            if not found:
                return None
            conn.execute(rollouts_table.update().where(rollouts_table.c.id == found[0].id)
                         .values(abort_requested=reason or "aborted by a user"))  # fmt: skip
            return self._get(conn, found[0].id)

    def append_step(
        self, rollout_id: int, *, step_index: int, step_name: str, weight: int, action: str,
        challenger_requests: int = 0, champion_requests: int = 0, summary: str = "",
        verdict: dict[str, Any] | None = None, at: datetime | None = None,
    ) -> StepRow:  # fmt: skip
        values = {
            "rollout_id": rollout_id, "at": as_utc(at or utcnow()), "step_index": step_index,
            "step_name": step_name, "weight": weight, "action": action,
            "challenger_requests": challenger_requests, "champion_requests": champion_requests,
            "summary": summary, "verdict": None if verdict is None else json.dumps(verdict, default=str),
        }  # fmt: skip
        with self._begin() as conn:
            conn.execute(steps_table.insert().values(**values))
        return StepRow(values["at"], step_index, step_name, weight, action, challenger_requests,
                       champion_requests, summary, verdict)  # type: ignore[arg-type]  # fmt: skip

    def steps(self, rollout_id: int) -> list[StepRow]:
        query = steps_table.select().where(steps_table.c.rollout_id == rollout_id)
        with self._begin() as conn:
            return [_step(r) for r in conn.execute(query.order_by(steps_table.c.id))]

    def _active(self, conn: Connection, model: str) -> list[RolloutRecord]:
        query = rollouts_table.select().where(
            rollouts_table.c.model == model, rollouts_table.c.status.in_(list(ACTIVE))
        )
        return [_record(r) for r in conn.execute(query.order_by(rollouts_table.c.id.desc()))]

    def _get(self, conn: Connection, rollout_id: int) -> RolloutRecord:
        row = conn.execute(rollouts_table.select().where(rollouts_table.c.id == rollout_id)).first()
        if row is None:
            raise StoreError(f"no rollout {rollout_id} in {describe(self.engine)}")
        return _record(row)

    def _finish(self, conn: Connection, rollout_id: int, status: Status, reason: str, now: datetime) -> None:
        conn.execute(
            rollouts_table.update()
            .where(rollouts_table.c.id == rollout_id, rollouts_table.c.finished_at.is_(None))
            .values(status=status, reason=reason, finished_at=now)
        )

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"rollout state in {describe(self.engine)} failed: {exc}") from exc
