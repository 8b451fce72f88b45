"""Who is served by which model version: sticky assignment, pinning and the routing table.

Pure: no SDK, no I/O, so every gateway replica computes the same answer from the same inputs.

- **Buckets.** ``bucket_of(experiment_id, key)`` hashes into :data:`BUCKETS` (10,000) fixed
  buckets with BLAKE2b (stable across processes and machines; Python's ``hash`` is salted).
- **Weights are basis points** (0..10,000 = 0..100%), one bucket per basis point, so a weight
  is an exact bucket count with no rounding. ``weight_from_percent(5)`` gives 500.
- **The challenger owns the lowest ``weight`` buckets**: bucket < weight. Raising the weight only
  adds buckets to the challenger, lowering it only removes them, so no user ever flips the
  other way during a rollout.
- **Pins** (``name@alias``, ``name/3``) choose the version themselves; they are served on the
  ``pinned`` arm so smoke tests and replays never count as evidence about the split.
- A model nothing serves is a :class:`NoRoute` result, not an exception.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

from tuneops.errors import UserError

BUCKETS = 10_000
FULL_WEIGHT = BUCKETS

Arm = Literal["champion", "challenger", "pinned"]
KeySource = Literal["user", "header", "request-id"]
Strategy = Literal["shadow", "blue-green", "canary", "ab"]
STRATEGIES: tuple[Strategy, ...] = ("shadow", "blue-green", "canary", "ab")

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"

_MODEL_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"  # the spec's model.name rule
_ALIAS = r"[A-Za-z_][A-Za-z0-9_-]{0,255}"  # MLflow alias names
_TARGET = re.compile(rf"(?P<model>{_MODEL_NAME})(?:@(?P<alias>{_ALIAS})|/(?P<version>[1-9][0-9]{{0,9}}))?")


class ModelNameError(UserError, ValueError):
    """The ``model`` of a request is not ``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION``."""


def weight_from_percent(percent: float) -> int:
    """Basis points for a share in percent (the rollout's steps 5, 25, 50, 100)."""
    if not 0 <= percent <= 100:
        raise ValueError(f"a challenger weight is 0-100%, not {percent}")
    return round(percent * FULL_WEIGHT / 100)


def bucket_of(experiment_id: str, user_key: str) -> int:
    """The bucket (0..BUCKETS-1) of ``user_key`` in one experiment.

    Both strings are length-prefixed so ("ab", "c") and ("a", "bc") never share an input. A new
    experiment id reshuffles users, so successive rollouts do not reuse the same guinea pigs.
    """
    exp, key = experiment_id.encode(), user_key.encode()
    digest = hashlib.blake2b(
        len(exp).to_bytes(4, "big") + exp + key, digest_size=8, person=b"tuneops-bucket"
    ).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def hash_user_key(user_key: str) -> str:
    """The user key as stored in the request log (hex BLAKE2b), stable across replicas."""
    return hashlib.blake2b(user_key.encode(), digest_size=16, person=b"tuneops-user").hexdigest()


def new_request_id() -> str:
    """A fresh request id. Never the client's ``x-request-id``: the log is idempotent on ours."""
    return f"req_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class AssignmentKey:
    """The key a request is assigned by and where it came from."""

    value: str
    source: KeySource


def assignment_key(user: object, header: str | None, request_id: str) -> AssignmentKey:
    """The request's ``user`` field, else the ``x-tuneops-user`` header, else the request id.

    ``user`` is taken from untrusted JSON, hence ``object``: only a non-blank string counts.
    """
    if isinstance(user, str) and user.strip():
        return AssignmentKey(user, "user")
    if header is not None and header.strip():
        return AssignmentKey(header.strip(), "header")
    return AssignmentKey(request_id, "request-id")


@dataclass(frozen=True)
class Unpinned:
    """``model="claims-triage"``: the routing table decides."""

    model: str


@dataclass(frozen=True)
class PinnedAlias:
    """``model="claims-triage@champion"``: whatever version the alias points at."""

    model: str
    alias: str


@dataclass(frozen=True)
class PinnedVersion:
    """``model="claims-triage/3"``: exactly that registered version."""

    model: str
    version: str


ModelTarget: TypeAlias = Unpinned | PinnedAlias | PinnedVersion


def parse_model(text: str) -> ModelTarget:
    """Parse a request's ``model`` field into what it asks for.

    Raises:
        ModelNameError: not ``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION`` (version a positive integer).
    """
    match = _TARGET.fullmatch(text)
    if match is None:
        raise ModelNameError(
            f"model {text!r} is not a registered model name",
            hint="use NAME, NAME@ALIAS (e.g. claims-triage@champion) or NAME/VERSION (e.g. claims-triage/3)",
        )
    model, alias, version = match.group("model", "alias", "version")
    if alias is not None:
        return PinnedAlias(model, alias)
    if version is not None:
        return PinnedVersion(model, version)
    return Unpinned(model)


@dataclass(frozen=True)
class RoutingTable:
    """One model's routing: its aliases (from MLflow) and the challenger's share (rollout state).

    ``weight`` is in basis points and already *effective*: the caller passes 0 when the rollout
    state's weight was granted to another version than the current challenger.
    """

    model: str
    aliases: tuple[tuple[str, str], ...] = ()
    weight: int = 0
    strategy: Strategy = "canary"
    experiment_id: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= FULL_WEIGHT:
            raise ValueError(f"weight is in basis points (0..{FULL_WEIGHT}), not {self.weight}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {STRATEGIES}")

    @classmethod
    def derive(
        cls,
        model: str,
        aliases: Mapping[str, str],
        *,
        weight: int = 0,
        strategy: Strategy = "canary",
        experiment_id: str = "",
    ) -> RoutingTable:
        """Build the table from MLflow's alias → version map and the rollout state."""
        return cls(model, tuple(sorted(aliases.items())), weight, strategy, experiment_id)

    def alias(self, name: str) -> str | None:
        """The version ``name`` points at, if it is set."""
        return dict(self.aliases).get(name)

    @property
    def champion(self) -> str | None:
        return self.alias(CHAMPION_ALIAS)

    @property
    def challenger(self) -> str | None:
        """The challenger, unless it is missing or the same version as the champion."""
        version = self.alias(CHALLENGER_ALIAS)
        return None if version == self.champion else version

    @property
    def experiment(self) -> str:
        """The hash salt: the rollout's experiment id, else one fixed per challenger version."""
        return self.experiment_id or f"{self.model}@{self.challenger}"


@dataclass(frozen=True)
class Route:
    """Where one request goes.

    ``fallback`` is the version to fail over to (the champion, for challenger requests) when the
    first upstream fails before any byte was sent. ``shadow`` is a version that receives a copy of
    the request whose answer the client never sees (shadow strategy).
    """

    version: str
    arm: Arm
    fallback: str | None = None
    shadow: str | None = None


@dataclass(frozen=True)
class NoRoute:
    """Nothing serves this request (no champion, unknown alias); ``reason`` says why."""

    model: str
    reason: str


def route(table: RoutingTable, key: str) -> Route | NoRoute:
    """The sticky route of assignment key ``key`` through ``table``."""
    champion, challenger = table.champion, table.challenger
    if champion is None:
        return NoRoute(table.model, f"model {table.model!r} has no {CHAMPION_ALIAS!r} version")
    if challenger is None or table.weight == 0:
        return Route(champion, "champion")
    in_challenger_share = bucket_of(table.experiment, key) < table.weight
    if table.strategy == "shadow":
        return Route(champion, "champion", shadow=challenger if in_challenger_share else None)
    if in_challenger_share:
        return Route(challenger, "challenger", fallback=champion)
    return Route(champion, "champion")


def resolve(table: RoutingTable, target: ModelTarget, key: str) -> Route | NoRoute:
    """Route a parsed ``model`` field: pins bypass the split, everything else is :func:`route`.

    A pinned version is returned as asked; whether it exists is the registry's to say.
    """
    if target.model != table.model:
        raise ValueError(f"table of {table.model!r} asked to route {target.model!r}")
    if isinstance(target, PinnedVersion):
        return Route(target.version, "pinned")
    if isinstance(target, PinnedAlias):
        version = table.alias(target.alias)
        if version is None:
            return NoRoute(table.model, f"model {table.model!r} has no {target.alias!r} alias")
        return Route(version, "pinned")
    return route(table, key)
