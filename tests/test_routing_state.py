"""Rollout state and routing history on real SQLite and PostgreSQL: idempotent, append-only, as of T."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.test_requestlog import postgres_schema
from tuneops.routing_state import (
    FULL_WEIGHT,
    STRATEGIES,
    RolloutState,
    RoutingSnapshot,
    RoutingState,
    changes_table,
    routing_at,
)
from tuneops.serving.gateway import assignment

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RoutingState]:
    if request.param == "sqlite":
        opened = RoutingState.open(f"sqlite:///{tmp_path / 'state.db'}")
        RoutingState.open(f"sqlite:///{tmp_path / 'state.db'}").close()  # idempotent
        yield opened
        opened.close()
        return
    with postgres_schema(request.getfixturevalue("postgres_url")) as url:
        opened = RoutingState.open(url)
        RoutingState.open(url).close()
        yield opened
        opened.close()


def test_vocabulary_matches_the_gateways() -> None:
    assert FULL_WEIGHT == assignment.FULL_WEIGHT == assignment.BUCKETS
    assert STRATEGIES == assignment.STRATEGIES


def test_a_model_never_set_has_no_challenger_traffic(state: RoutingState) -> None:
    assert state.get("m") == RolloutState("m")
    assert state.get("m").weight_for("2") == 0
    assert state.history("m") == [] and state.routing_at("m", minutes(0)) is None


def test_a_canary_is_recorded_step_by_step_and_answered_as_of_t(state: RoutingState) -> None:
    assert state.observe_aliases("m", "1", None, actor="gateway", at=minutes(0)) is not None
    assert state.observe_aliases("m", "1", "2", actor="gateway", at=minutes(1)) is not None
    for step, weight in enumerate((500, 2_500, 5_000), start=2):
        change = state.set_rollout(
            "m", challenger_version="2", weight=weight, strategy="canary", experiment_id="exp-2",
            actor="rollout", reason=f"step {weight}", at=minutes(step),
        )  # fmt: skip
        assert change.changed and change.state.weight == weight
    assert state.get("m").weight_for("2") == 5_000 and state.get("m").experiment_id == "exp-2"
    history = state.history("m")
    assert [(s.cause, s.champion, s.challenger, s.weight) for s in history] == [
        ("alias", "1", None, 0),
        ("alias", "1", "2", 0),
        ("rollout", "1", "2", 500),
        ("rollout", "1", "2", 2_500),
        ("rollout", "1", "2", 5_000),
    ]
    assert state.routing_at("m", minutes(0) - timedelta(seconds=1)) is None
    at_two_and_a_half = state.routing_at("m", minutes(2) + timedelta(seconds=30))
    assert at_two_and_a_half is not None and at_two_and_a_half.shares() == {"1": 0.95, "2": 0.05}
    assert state.routing_at("m", minutes(3)).shares() == {"1": 0.75, "2": 0.25}  # type: ignore[union-attr]
    assert state.routing_at("m", minutes(99)).shares() == {"1": 0.5, "2": 0.5}  # type: ignore[union-attr]
    for t in (minutes(0), minutes(2) + timedelta(seconds=1), minutes(4), minutes(50)):
        assert routing_at(history, t) == state.routing_at("m", t)
    assert history[-1].at == minutes(4) and history[-1].at.tzinfo is not None


def test_setting_the_same_rollout_twice_appends_nothing(state: RoutingState) -> None:
    state.observe_aliases("m", "1", "2", actor="gateway")
    first = state.set_rollout("m", challenger_version="2", weight=500, experiment_id="e", actor="rollout")
    again = state.set_rollout("m", challenger_version="2", weight=500, actor="rollout")
    assert first.changed and not again.changed and again.state == first.state
    assert state.observe_aliases("m", "1", "2", actor="gateway-2") is None
    assert len(state.history("m")) == 2


def test_a_new_challenger_does_not_inherit_the_old_ones_weight(state: RoutingState) -> None:
    state.observe_aliases("m", "1", "2", actor="gateway", at=minutes(0))
    state.set_rollout("m", challenger_version="2", weight=5_000, actor="rollout", at=minutes(1))
    moved = state.observe_aliases("m", "1", "3", actor="gateway", at=minutes(2))
    assert moved is not None and moved.weight == 0 and moved.shares() == {"1": 1.0}
    assert state.get("m").weight_for("3") == 0
    promoted = state.observe_aliases("m", "2", None, actor="gateway", at=minutes(3))
    assert promoted is not None and promoted.shares() == {"2": 1.0}


def test_weights_granted_to_another_version_change_no_routing(state: RoutingState) -> None:
    state.observe_aliases("m", "1", "2", actor="gateway")
    change = state.set_rollout("m", challenger_version="9", weight=5_000, actor="rollout")
    assert change.changed and change.state.weight_for("2") == 0
    assert [s.weight for s in state.history("m")] == [0]


def test_bad_weights_and_strategies_are_refused(state: RoutingState) -> None:
    for weight in (-1, FULL_WEIGHT + 1):
        with pytest.raises(ValueError, match="basis points"):
            state.set_rollout("m", challenger_version="2", weight=weight, actor="a")
    with pytest.raises(ValueError, match="strategy"):
        state.set_rollout("m", challenger_version="2", weight=1, strategy="yolo", actor="a")


def test_routing_history_is_append_only(state: RoutingState) -> None:
    state.observe_aliases("m", "1", "2", actor="gateway")
    for statement in (
        changes_table.update().values(weight=10_000),
        changes_table.delete(),
    ):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), state.engine.begin() as conn:
            conn.execute(statement)
    assert len(state.history("m")) == 1


@pytest.mark.parametrize(
    ("champion", "challenger", "weight", "strategy", "expected"),
    [
        (None, "2", 5_000, "canary", {}),
        ("1", None, 5_000, "canary", {"1": 1.0}),
        ("1", "1", 5_000, "canary", {"1": 1.0}),
        ("1", "2", 0, "canary", {"1": 1.0}),
        ("1", "2", 10_000, "blue-green", {"2": 1.0}),
        ("1", "2", 5_000, "shadow", {"1": 1.0}),
        ("1", "2", 1_000, "ab", {"1": 0.9, "2": 0.1}),
    ],
)
def test_shares_per_version(
    champion: str | None, challenger: str | None, weight: int, strategy: str, expected: dict[str, float]
) -> None:
    snapshot = RoutingSnapshot("m", T0, "rollout", champion, challenger, weight, strategy, "", "a", "")
    assert snapshot.shares() == pytest.approx(expected)


def test_routing_at_on_an_empty_history_and_naive_times() -> None:
    assert routing_at([], T0) is None
    snap = RoutingSnapshot("m", T0, "alias", "1", None, 0, "canary", "", "a", "")
    assert routing_at([snap], T0.replace(tzinfo=None)) == snap
