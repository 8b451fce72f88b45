"""Which deployments to retire: the pure decision, case by case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tuneops.registry.types import LedgerEntry, RegisteredVersion
from tuneops.tasks.finetune import rules
from tuneops.tasks.finetune.lifecycle import judge_deployment, plan_retirement, released_at, version_of
from tuneops.tasks.finetune.types import Deployment

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(hours=24)


def _deployment(name: str = "bot-abc", job: str = "ftjob-abc", created: datetime | None = None) -> Deployment:
    return Deployment(
        name=name,
        model="gpt-4o-mini.ft-abc",
        provisioning_state="Succeeded",
        tags=rules.deployment_tags("bot", job),
        created_at=int(created.timestamp()) if created else None,
    )


def _version(
    version: str = "1",
    *,
    gate: str | None = "passed",
    aliases: tuple[str, ...] = (),
    job: str = "ftjob-abc",
    endpoint: str | None = "bot-abc",
    created: datetime | None = NOW - timedelta(days=3),
) -> RegisteredVersion:
    tags = {"tuneops.job_id": job}
    if gate:
        tags["tuneops.gate"] = gate
    if endpoint:
        tags["tuneops.endpoint_model"] = endpoint
    return RegisteredVersion("bot", version, None, "", tags, aliases, created_at=created)


def _move(alias: str, from_version: str | None, to_version: str | None, at: datetime) -> LedgerEntry:
    return LedgerEntry(0, "bot", alias, from_version, to_version, "me", "", "cli", at)


def _judge(version: RegisteredVersion | None, history=(), deployment: Deployment | None = None):
    return judge_deployment(deployment or _deployment(), version, list(history), now=NOW, grace=GRACE)


@pytest.mark.parametrize("alias", ["champion", "challenger", "previous"])
def test_a_version_holding_a_protected_alias_keeps_its_deployment_even_if_its_gate_failed(alias) -> None:
    verdict = _judge(_version(gate="failed", aliases=(alias,)))
    assert not verdict.retire and verdict.reason == f"serves {alias}" and verdict.aliases == (alias,)


def test_an_unprotected_alias_does_not_protect() -> None:
    verdict = _judge(_version(gate="failed", aliases=("staging",)))
    assert verdict.retire and verdict.aliases == ()


def test_a_failed_gate_retires_at_once() -> None:
    verdict = _judge(_version(gate="failed", created=NOW))
    assert verdict.retire and verdict.reason == "failed the quality gate" and verdict.due_at == NOW


def test_a_passed_version_without_alias_keeps_its_deployment_for_the_grace_period() -> None:
    young = _judge(_version(created=NOW - GRACE + timedelta(minutes=1)))
    assert not young.retire and young.due_at == NOW + timedelta(minutes=1)
    old = _judge(_version(created=NOW - GRACE))
    assert old.retire and "not champion/challenger/previous since" in old.reason


def test_the_grace_period_counts_from_losing_the_last_protected_alias() -> None:
    history = [
        _move("challenger", None, "1", NOW - timedelta(days=10)),
        _move("champion", None, "1", NOW - timedelta(days=9)),
        _move("champion", "1", "2", NOW - timedelta(days=2)),
        _move("previous", None, "1", NOW - timedelta(days=2)),
        _move("previous", "1", "3", NOW - timedelta(hours=5)),  # lost its last alias 5 h ago
    ]
    assert released_at("1", history) == NOW - timedelta(hours=5)
    verdict = _judge(_version(created=NOW - timedelta(days=20)), history)
    assert not verdict.retire and verdict.due_at == NOW + timedelta(hours=19)
    later = judge_deployment(_deployment(), _version(), history, now=NOW + timedelta(hours=19), grace=GRACE)
    assert later.retire


def test_moves_of_other_versions_and_other_aliases_do_not_count() -> None:
    history = [_move("champion", "2", "3", NOW), _move("staging", "1", None, NOW)]
    assert released_at("1", history) is None


def test_an_unregistered_deployment_gets_the_grace_period_from_its_creation() -> None:
    young = _judge(None, deployment=_deployment(created=NOW - timedelta(hours=1)))
    assert not young.retire and young.version is None and "not registered yet" in young.reason
    old = _judge(None, deployment=_deployment(created=NOW - timedelta(hours=25)))
    assert old.retire and "never registered" in old.reason


def test_unknown_ages_are_kept() -> None:
    assert not _judge(None, deployment=_deployment(created=None)).retire
    assert not _judge(_version(created=None)).retire


def test_a_deployment_is_matched_by_endpoint_model_then_by_job_id() -> None:
    by_endpoint = _version("1", endpoint="bot-abc", job="ftjob-other")
    by_job = _version("2", endpoint="something-else", job="ftjob-abc")
    assert version_of(_deployment(), [by_job, by_endpoint]) is by_endpoint
    assert version_of(_deployment(), [by_job]) is by_job
    assert version_of(_deployment(job="ftjob-zzz"), [by_job]) is None


def test_the_plan_judges_each_deployment_in_name_order() -> None:
    deployments = [
        _deployment("bot-b", "ftjob-b", NOW - timedelta(days=5)),
        _deployment("bot-a", "ftjob-a", NOW - timedelta(days=5)),
        _deployment("bot-c", "ftjob-c", NOW - timedelta(days=5)),
    ]
    versions = [
        _version("1", job="ftjob-a", endpoint="bot-a", aliases=("champion",)),
        _version("2", job="ftjob-b", endpoint="bot-b", gate="failed"),
    ]
    plan = plan_retirement(deployments, versions, [], now=NOW, grace=GRACE)
    assert [(v.deployment.name, v.version, v.retire) for v in plan] == [
        ("bot-a", "1", False),
        ("bot-b", "2", True),
        ("bot-c", None, True),
    ]


def test_only_deployments_tagged_for_the_model_are_tuneops_own() -> None:
    assert rules.is_managed_deployment(_deployment(), "bot")
    assert not rules.is_managed_deployment(_deployment(), "other-model")
    untagged = Deployment(name="x", model="m", provisioning_state="Succeeded")
    assert not rules.is_managed_deployment(untagged, "bot")
    fake = Deployment(name="x", model="m", provisioning_state="S", tags={"tuneops-model": "bot"})
    assert not rules.is_managed_deployment(fake, "bot")
