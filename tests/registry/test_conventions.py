"""The pure registry rules: tags, promotion plans, alias diffs, ledger time travel, references."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tuneops.registry.conventions import (
    ModelRef,
    diff_aliases,
    last_known,
    match_intent,
    parse_model_ref,
    plan_promotion,
    version_at,
    version_tags,
)
from tuneops.registry.types import AliasMove, DatasetLink, LedgerEntry, PromotionIntent, RegistrationRequest

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def entry(i: int, alias: str, frm: str | None, to: str | None, minutes: int) -> LedgerEntry:
    return LedgerEntry(i, "m", alias, frm, to, "me", "why", "cli", T0 + timedelta(minutes=minutes))


def request(**overrides: object) -> RegistrationRequest:
    values: dict[str, object] = {
        "model_name": "m",
        "provider": "openai",
        "base_model": "gpt-4.1-mini",
        "endpoint_base_url": "https://x/v1",
        "endpoint_model": "ft:gpt:1",
        "job_id": "ftjob-1",
        "datasets": (
            DatasetLink("train", "a" * 64, "s3://b/train.jsonl"),
            DatasetLink("validation", "b" * 64, "s3://b/validation.jsonl"),
        ),
    }
    values.update(overrides)
    return RegistrationRequest(**values)  # type: ignore[arg-type]


def test_version_tags_follow_the_architecture() -> None:
    tags = version_tags(
        request(
            eval_run_id="r1",
            gate_passed=False,
            gate_reasons=("f1 too low",),
            flow_run_id="f1",
            hyperparameters={"n_epochs": 3},
            trained_tokens=10,
            estimated_cost=0.5,
        )
    )
    assert tags["tuneops.provider"] == "openai"
    assert tags["tuneops.endpoint_model"] == "ft:gpt:1"
    assert tags["tuneops.train_digest"] == "a" * 64
    assert tags["tuneops.validation_digest"] == "b" * 64
    assert "tuneops.test_digest" not in tags
    assert tags["tuneops.gate"] == "failed"
    assert json.loads(tags["tuneops.gate_reasons"]) == ["f1 too low"]
    assert json.loads(tags["tuneops.hyperparameters"]) == {"n_epochs": 3}
    assert tags["tuneops.eval_run_id"] == "r1" and tags["tuneops.flow_run_id"] == "f1"
    assert all(k.startswith("tuneops.") for k in tags)


def test_no_gate_recorded_means_no_gate_tag() -> None:
    assert "tuneops.gate" not in version_tags(request())


def test_challenger_moves_alone() -> None:
    d = plan_promotion(
        alias="challenger",
        to_version="3",
        current={"champion": "1", "challenger": "2"},
        gate="failed",
        reason="try it",
    )
    assert d.allowed and d.moves == (AliasMove("challenger", "2", "3"),)


def test_champion_keeps_the_old_one_as_previous_and_ends_the_challenge() -> None:
    d = plan_promotion(
        alias="champion",
        to_version="3",
        current={"champion": "1", "challenger": "3", "previous": "0"},
        gate="passed",
        reason="won",
    )
    assert d.moves == (
        AliasMove("previous", "0", "1"),
        AliasMove("champion", "1", "3"),
        AliasMove("challenger", "3", None),
    )


def test_first_champion_has_no_previous() -> None:
    d = plan_promotion(alias="champion", to_version="1", current={}, gate="passed", reason="first")
    assert d.moves == (AliasMove("champion", None, "1"),)


@pytest.mark.parametrize("gate", ["failed", None])
def test_champion_on_a_gate_that_did_not_pass_needs_force(gate: str | None) -> None:
    refused = plan_promotion(
        alias="champion", to_version="2", current={"champion": "1"}, gate=gate, reason="x"
    )
    assert not refused.allowed and refused.needs_force and "--force" in (refused.refusal or "")
    forced = plan_promotion(
        alias="champion", to_version="2", current={"champion": "1"}, gate=gate, force=True, reason="hotfix"
    )
    assert forced.allowed and forced.moves[-1] == AliasMove("champion", "1", "2")


def test_force_still_needs_a_reason() -> None:
    d = plan_promotion(alias="champion", to_version="2", current={}, gate="failed", force=True, reason="  ")
    assert not d.allowed and "reason" in (d.refusal or "")


@pytest.mark.parametrize("alias", ["previous", "prod", ""])
def test_only_champion_and_challenger_are_set_by_hand(alias: str) -> None:
    assert not plan_promotion(alias=alias, to_version="1", current={}, gate="passed", reason="x").allowed


def test_already_there_is_a_no_op_and_champion_cannot_become_challenger() -> None:
    assert (
        plan_promotion(
            alias="champion", to_version="1", current={"champion": "1"}, gate="passed", reason="x"
        ).moves
        == ()
    )
    assert not plan_promotion(
        alias="challenger", to_version="1", current={"champion": "1"}, gate="passed", reason="x"
    ).allowed


versions = st.sampled_from(["1", "2", "3", "4"])
alias_maps = st.dictionaries(st.sampled_from(["champion", "challenger", "previous"]), versions)


@given(current=alias_maps, target=versions, alias=st.sampled_from(["champion", "challenger"]))
def test_applying_a_plan_puts_the_alias_on_the_target(
    current: dict[str, str], target: str, alias: str
) -> None:
    d = plan_promotion(alias=alias, to_version=target, current=current, gate="passed", reason="r")
    if not d.allowed:
        assert alias == "challenger" and current.get("champion") == target
        return
    state = dict(current)
    for move in d.moves:
        assert state.get(move.alias) == move.from_version  # every move starts from the real state
        if move.to_version is None:
            state.pop(move.alias)
        else:
            state[move.alias] = move.to_version
    assert state[alias] == target
    if alias == "champion" and current.get("champion") not in (None, target):
        assert state["previous"] == current["champion"]
    assert len({m.alias for m in d.moves}) == len(d.moves)  # each alias moves at most once


def test_diff_aliases_reports_sets_moves_and_deletions() -> None:
    moves = diff_aliases(
        {"champion": "2", "challenger": "3"}, {"champion": "1", "previous": "0", "challenger": "3"}
    )
    assert moves == (AliasMove("champion", "1", "2"), AliasMove("previous", "0", None))
    assert diff_aliases({}, {"champion": None}) == ()


def test_last_known_and_version_at_read_the_ledger_in_time_order() -> None:
    entries = [
        entry(1, "champion", None, "1", 0),
        entry(3, "champion", "2", "3", 20),
        entry(2, "champion", "1", "2", 10),
        entry(4, "challenger", None, "4", 15),
    ]
    assert last_known(entries) == {"champion": "3", "challenger": "4"}
    assert version_at(entries, "champion", T0 - timedelta(seconds=1)) is None
    assert version_at(entries, "champion", T0) == "1"
    assert version_at(entries, "champion", T0 + timedelta(minutes=15)) == "2"
    assert version_at(entries, "champion", T0 + timedelta(days=1)) == "3"
    assert version_at(entries, "challenger", T0 + timedelta(minutes=14)) is None


def test_match_intent_only_claims_moves_after_the_alias_last_ledger_row() -> None:
    entries = [entry(1, "champion", None, "1", 10)]
    old = PromotionIntent(1, "m", "champion", "2", "alice", "old", "cli", T0)
    new = PromotionIntent(2, "m", "champion", "2", "bob", "new", "cli", T0 + timedelta(minutes=11))
    other = PromotionIntent(3, "m", "challenger", "2", "bob", "x", "cli", T0 + timedelta(minutes=12))
    assert match_intent(AliasMove("champion", "1", "2"), [old, new, other], entries) == new
    assert match_intent(AliasMove("champion", "1", "2"), [old], entries) is None
    assert match_intent(AliasMove("champion", "1", "3"), [new], entries) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bot", ModelRef("bot")),
        ("bot@champion", ModelRef("bot", alias="champion")),
        ("my.bot-1/12", ModelRef("my.bot-1", version="12")),
        ("bot@", None),
        ("@x", None),
        ("bot/x", None),
    ],
)
def test_parse_model_ref(text: str, expected: ModelRef | None) -> None:
    assert parse_model_ref(text) == expected
