"""Sticky assignment: properties over many keys and weights, plus pinning and the edge cases."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneops.errors import UserError
from tuneops.registry.conventions import CHALLENGER, CHAMPION
from tuneops.serving.gateway import assignment
from tuneops.serving.gateway.assignment import (
    BUCKETS,
    STRATEGIES,
    AssignmentKey,
    ModelNameError,
    NoRoute,
    PinnedAlias,
    PinnedVersion,
    Route,
    RoutingTable,
    Unpinned,
    assignment_key,
    bucket_of,
    hash_user_key,
    new_request_id,
    parse_model,
    resolve,
    route,
    weight_from_percent,
)

MODEL = "claims-triage"
keys = st.text(min_size=1, max_size=40)
weights = st.integers(min_value=0, max_value=BUCKETS)


def table(
    weight: int, *, strategy: str = "canary", experiment: str = "exp-1", **aliases: str
) -> RoutingTable:
    aliases = aliases or {"champion": "1", "challenger": "2"}
    return RoutingTable.derive(MODEL, aliases, weight=weight, strategy=strategy, experiment_id=experiment)  # type: ignore[arg-type]


def test_the_module_is_pure() -> None:
    tree = ast.parse(Path(assignment.__file__).read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    roots = {name.split(".")[0] for name in imported}
    assert roots <= {"__future__", "hashlib", "re", "uuid", "collections", "dataclasses", "typing", "tuneops"}
    assert {name for name in imported if name.startswith("tuneops")} == {"tuneops.errors"}


def test_alias_names_match_the_registry_conventions() -> None:
    assert (assignment.CHAMPION_ALIAS, assignment.CHALLENGER_ALIAS) == (CHAMPION, CHALLENGER)


def test_strategies_match_the_routing_state_vocabulary() -> None:
    from tuneops.routing_state import STRATEGIES as STORED

    assert tuple(STORED) == STRATEGIES


@given(st.text(max_size=30), keys)
def test_buckets_are_in_range_and_deterministic(experiment: str, key: str) -> None:
    bucket = bucket_of(experiment, key)
    assert 0 <= bucket < BUCKETS
    assert bucket == bucket_of(experiment, key)


def test_buckets_and_user_hashes_are_stable_across_releases() -> None:
    # Pinned values: a change here would reshuffle every user of every running experiment.
    assert [bucket_of("exp-1", k) for k in ("alice", "bob", "")] == [1446, 432, 2949]
    assert hash_user_key("alice") == "80338305944f0e0f7b00361500d8c5e2"


def test_experiment_and_key_do_not_run_together() -> None:
    pairs = [("ab", "c"), ("a", "bc"), ("", "abc"), ("abc", "")]
    assert len({bucket_of(e, k) for e, k in pairs}) == len(pairs)


@given(keys, weights, weights)
def test_raising_the_weight_never_moves_a_challenger_user_back(key: str, low: int, high: int) -> None:
    low, high = sorted((low, high))
    before, after = route(table(low), key), route(table(high), key)
    assert isinstance(before, Route) and isinstance(after, Route)
    if before.arm == "challenger":
        assert after.arm == "challenger"
    if after.arm == "champion":  # lowering high -> low never moves a champion user onto the challenger
        assert before.arm == "champion"


@given(keys, weights)
def test_two_replicas_assign_the_same_key_the_same_way(key: str, weight: int) -> None:
    replica_a = RoutingTable.derive(
        MODEL, {"challenger": "2", "champion": "1"}, weight=weight, experiment_id="e"
    )
    replica_b = RoutingTable.derive(
        MODEL, {"champion": "1", "challenger": "2"}, weight=weight, experiment_id="e"
    )
    assert replica_a == replica_b
    assert route(replica_a, key) == route(replica_b, key)


@given(keys)
def test_weight_zero_and_full_weight_are_all_or_nothing(key: str) -> None:
    assert route(table(0), key) == Route("1", "champion")
    assert route(table(BUCKETS), key) == Route("2", "challenger", fallback="1")


def test_share_at_ten_percent_lies_in_the_binomial_99_interval() -> None:
    n, p = 5_000, 0.10
    hits = sum(route(table(weight_from_percent(10)), f"user-{i}").arm == "challenger" for i in range(n))  # type: ignore[union-attr]
    half_width = 2.5758 * math.sqrt(n * p * (1 - p))
    assert n * p - half_width <= hits <= n * p + half_width


def test_a_new_experiment_reshuffles_users() -> None:
    users = [f"user-{i}" for i in range(2_000)]
    first = {u for u in users if route(table(1_000, experiment="exp-1"), u).arm == "challenger"}  # type: ignore[union-attr]
    second = {u for u in users if route(table(1_000, experiment="exp-2"), u).arm == "challenger"}  # type: ignore[union-attr]
    assert first and second and len(first & second) < len(first) / 2


def test_weight_from_percent_is_exact_basis_points() -> None:
    assert [weight_from_percent(p) for p in (0, 5, 25, 50, 100, 0.5)] == [0, 500, 2_500, 5_000, 10_000, 50]
    for bad in (-1, 100.01):
        with pytest.raises(ValueError, match="0-100%"):
            weight_from_percent(bad)


def test_table_rejects_weights_outside_basis_points_and_unknown_strategies() -> None:
    with pytest.raises(ValueError, match="basis points"):
        table(BUCKETS + 1)
    with pytest.raises(ValueError, match="basis points"):
        table(-1)
    with pytest.raises(ValueError, match="strategy"):
        table(10, strategy="yolo")


def test_no_challenger_sends_everyone_to_the_champion() -> None:
    only_champion = table(5_000, champion="7")
    assert {route(only_champion, f"u{i}") for i in range(200)} == {Route("7", "champion")}


def test_challenger_on_the_champion_version_is_no_split() -> None:
    same = table(5_000, champion="3", challenger="3")
    assert same.challenger is None
    assert {route(same, f"u{i}") for i in range(200)} == {Route("3", "champion")}


def test_no_champion_is_a_result_not_an_exception() -> None:
    for aliases in ({"challenger": "2"}, {"previous": "1"}):
        outcome = route(table(10_000, **aliases), "alice")
        assert isinstance(outcome, NoRoute)
        assert outcome.model == MODEL and "champion" in outcome.reason
    assert isinstance(route(RoutingTable(MODEL), "alice"), NoRoute)


def test_shadow_answers_with_the_champion_and_copies_the_challengers_share() -> None:
    shadow = table(1_000, strategy="shadow")
    routes = [route(shadow, f"u{i}") for i in range(2_000)]
    assert {(r.version, r.arm, r.fallback) for r in routes} == {("1", "champion", None)}  # type: ignore[union-attr]
    copied = {f"u{i}" for i, r in enumerate(routes) if r.shadow == "2"}  # type: ignore[union-attr]
    split = {f"u{i}" for i in range(2_000) if route(table(1_000), f"u{i}").arm == "challenger"}  # type: ignore[union-attr]
    assert copied == split and 0 < len(copied) < 2_000
    assert all(r.shadow in (None, "2") for r in routes)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("claims-triage", Unpinned("claims-triage")),
        ("claims-triage@champion", PinnedAlias("claims-triage", "champion")),
        ("claims-triage@previous", PinnedAlias("claims-triage", "previous")),
        ("claims-triage/3", PinnedVersion("claims-triage", "3")),
        ("a.b_c-1/12", PinnedVersion("a.b_c-1", "12")),
    ],
)
def test_parse_model_understands_names_aliases_and_versions(text: str, expected: object) -> None:
    assert parse_model(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", " ", "@champion", "claims@", "claims/", "claims/0", "claims/03", "claims/x", "claims/-1",
     "claims@a@b", "claims/3@champion", "claims@champion/3", "-claims", "claims triage", "a/b/3",
     "ft:gpt-4o:org:x", "claims@1alias", "x" * 129],
)  # fmt: skip
def test_malformed_model_names_are_a_clear_user_error(text: str) -> None:
    with pytest.raises(ModelNameError, match="not a registered model name") as caught:
        parse_model(text)
    assert isinstance(caught.value, UserError) and isinstance(caught.value, ValueError)
    assert "NAME@ALIAS" in caught.value.one_line()


def test_pins_bypass_the_split_and_are_their_own_arm() -> None:
    split = table(10_000, champion="1", challenger="2", previous="0")
    assert resolve(split, PinnedAlias(MODEL, "champion"), "u") == Route("1", "pinned")
    assert resolve(split, PinnedAlias(MODEL, "previous"), "u") == Route("0", "pinned")
    assert resolve(split, PinnedVersion(MODEL, "9"), "u") == Route("9", "pinned")
    assert resolve(split, Unpinned(MODEL), "u") == Route("2", "challenger", fallback="1")
    missing = resolve(split, PinnedAlias(MODEL, "staging"), "u")
    assert isinstance(missing, NoRoute) and "staging" in missing.reason
    with pytest.raises(ValueError, match="other"):
        resolve(split, Unpinned("other"), "u")


def test_pinned_challenger_alias_works_without_a_champion() -> None:
    assert resolve(table(0, challenger="2"), PinnedAlias(MODEL, "challenger"), "u") == Route("2", "pinned")


@pytest.mark.parametrize(
    ("user", "header", "expected"),
    [
        ("alice", "bob", AssignmentKey("alice", "user")),
        (None, "bob", AssignmentKey("bob", "header")),
        ("  ", " bob ", AssignmentKey("bob", "header")),
        (42, None, AssignmentKey("req_1", "request-id")),
        ("", "", AssignmentKey("req_1", "request-id")),
        (None, None, AssignmentKey("req_1", "request-id")),
    ],
)
def test_assignment_key_prefers_user_then_header_then_request_id(
    user: object, header: str | None, expected: AssignmentKey
) -> None:
    assert assignment_key(user, header, "req_1") == expected


def test_request_ids_are_fresh_and_user_keys_are_hashed_stably() -> None:
    ids = {new_request_id() for _ in range(1_000)}
    assert len(ids) == 1_000 and all(i.startswith("req_") for i in ids)
    assert hash_user_key("alice@example.com") == hash_user_key("alice@example.com")
    assert hash_user_key("alice@example.com") != hash_user_key("bob@example.com")
    assert "alice" not in hash_user_key("alice") and len(hash_user_key("alice")) == 32


@settings(max_examples=50)
@given(
    st.dictionaries(
        st.sampled_from(["champion", "challenger", "previous"]), st.sampled_from("123"), min_size=1
    )
)
def test_derive_is_order_independent(aliases: dict[str, str]) -> None:
    reversed_aliases = dict(reversed(list(aliases.items())))
    assert RoutingTable.derive(MODEL, aliases) == RoutingTable.derive(MODEL, reversed_aliases)
