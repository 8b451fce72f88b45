"""Which provider deployments to retire: a pure decision, no SDK, no I/O.

Azure bills a fine-tune's deployment by the hour whether or not anything calls it. A deployment
tuneops made is retired (deleted) when the version it serves failed the quality gate, or when
that version has not been ``champion``, ``challenger`` or ``previous`` for longer than a grace
period. A deployment no registered version points at (a run stopped between deploying and
registering, or one still evaluating) gets the same grace from the deployment's creation.
Deployments tuneops did not create are never considered: the caller passes only those tagged
by ``rules.deployment_tags``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tuneops.registry.conventions import TAG_ENDPOINT_MODEL, TAG_JOB_ID
from tuneops.registry.types import LedgerEntry, RegisteredVersion
from tuneops.tasks.finetune.rules import DEPLOYMENT_TAG_JOB
from tuneops.tasks.finetune.types import Deployment

PROTECTED_ALIASES = frozenset({"champion", "challenger", "previous"})
"""A version holding one of these is serving, under rollout, or the instant-rollback target."""


@dataclass(frozen=True)
class RetirementReport:
    """What ``retire_deployments`` decided and did; ``kept`` is true when deletion was opted out."""

    model_name: str
    verdicts: tuple[DeploymentVerdict, ...] = ()
    deleted: tuple[str, ...] = ()
    kept: bool = False
    price_per_hour: float | None = None

    @property
    def due(self) -> tuple[DeploymentVerdict, ...]:
        return tuple(v for v in self.verdicts if v.retire)


@dataclass(frozen=True)
class DeploymentVerdict:
    """What to do with one deployment, and why (``due_at``: when it becomes retirable)."""

    deployment: Deployment
    version: str | None
    retire: bool
    reason: str
    due_at: datetime | None = None
    aliases: tuple[str, ...] = ()
    gate: str | None = None


def _stamp(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


def released_at(version: str, history: Iterable[LedgerEntry]) -> datetime | None:
    """When ``version`` last stopped holding a protected alias, from the promotion ledger."""
    times = [
        entry.at
        for entry in history
        if entry.alias in PROTECTED_ALIASES and entry.from_version == version and entry.to_version != version
    ]
    return max(times, default=None)


def version_of(deployment: Deployment, versions: Sequence[RegisteredVersion]) -> RegisteredVersion | None:
    """The registered version a deployment serves: by its endpoint model tag, else by job id."""
    job_id = deployment.tags.get(DEPLOYMENT_TAG_JOB)
    for version in versions:
        if version.tags.get(TAG_ENDPOINT_MODEL) == deployment.name:
            return version
    for version in versions:
        if job_id and version.tags.get(TAG_JOB_ID) == job_id:
            return version
    return None


def judge_deployment(
    deployment: Deployment,
    version: RegisteredVersion | None,
    history: Sequence[LedgerEntry],
    *,
    now: datetime,
    grace: timedelta,
) -> DeploymentVerdict:
    """Keep or retire one tuneops deployment (see the module docstring for the rules)."""
    if version is None:
        created = _stamp(deployment.created_at)
        if created is None:
            return DeploymentVerdict(deployment, None, False, "no registered version; age unknown, kept")
        due = created + grace
        if now >= due:
            return DeploymentVerdict(deployment, None, True, "never registered (grace period over)", due)
        return DeploymentVerdict(deployment, None, False, "not registered yet (within the grace period)", due)
    held = tuple(sorted(PROTECTED_ALIASES & set(version.aliases)))

    def verdict(retire: bool, reason: str, due: datetime | None = None) -> DeploymentVerdict:
        return DeploymentVerdict(deployment, version.version, retire, reason, due, held, version.gate)

    if held:
        return verdict(False, f"serves {', '.join(held)}")
    if version.gate == "failed":
        return verdict(True, "failed the quality gate", now)
    since = released_at(version.version, history) or version.created_at
    if since is None:
        return verdict(False, "no alias; age unknown, kept")
    due = since + grace
    if now >= due:
        return verdict(True, f"not champion/challenger/previous since {since:%Y-%m-%d %H:%M} UTC", due)
    return verdict(False, "no alias (within the grace period)", due)


def plan_retirement(
    deployments: Iterable[Deployment],
    versions: Sequence[RegisteredVersion],
    history: Sequence[LedgerEntry],
    *,
    now: datetime,
    grace: timedelta,
) -> list[DeploymentVerdict]:
    """A verdict per deployment, in name order; only ever given deployments tuneops created."""
    return [
        judge_deployment(d, version_of(d, versions), history, now=now, grace=grace)
        for d in sorted(deployments, key=lambda d: d.name)
    ]
