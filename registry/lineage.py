"""Lineage: from an alias (or version) down to the data, the job, the evaluation and the ledger.

The chain is read from the version's ``tuneops.*`` tags, the registration run (dataset
inputs), the fine-tune run (params, metrics), the evaluation run (metrics, gate tags), the
dataset manifest in the data store when it can be reached, and the promotion ledger. A link
that cannot be followed is reported in ``warnings`` rather than failing the whole answer: an
audit of a half-broken state must still show what is known.

Served traffic joins the chain through two core records the gateway writes: the routing history
(:mod:`tuneops.routing_state`: which versions served, with what share, from when) answers
``--at T``'s "who was serving", and the request log (:mod:`tuneops.requestlog`) answers
``--request ID``'s "which version answered this, on which arm, at what weight".

The JSON form (``Lineage.to_json_dict``) is a stable interface, documented in
``docs/lineage-json.md``; bump ``SCHEMA_VERSION`` on any incompatible change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from tuneops.errors import RegistryError, StoreError, UsageError, VersionNotFoundError
from tuneops.registry import conventions as c
from tuneops.registry.ancestry import CheckpointLineage, ParentLineage, checkpoint_lineage, parent_lineage
from tuneops.registry.ledger import Ledger, utcnow
from tuneops.registry.mlflow_store import RegistryStore, RunSummary
from tuneops.registry.tracking import TAG_SHA256
from tuneops.registry.trigger import Trigger, trigger_of
from tuneops.registry.types import LedgerEntry, RegisteredVersion
from tuneops.requestlog import LoggedRequest, RequestLog
from tuneops.routing_state import RoutingSnapshot, RoutingState

SCHEMA_VERSION = 1
ManifestReader = Callable[[str], dict[str, Any]]
"""dataset version URI (its folder in the store) -> manifest dict; raises StoreError when unreachable."""


@dataclass(frozen=True)
class FineTuneRecord:
    job_id: str
    provider: str | None
    base_model: str | None
    endpoint_model: str | None
    endpoint_base_url: str | None
    hyperparameters: dict[str, Any]
    trained_tokens: int | None
    estimated_cost: float | None
    run_id: str | None
    run_params: dict[str, str]
    run_metrics: dict[str, float]


@dataclass(frozen=True)
class DatasetSplit:
    split: str
    sha256: str
    uri: str | None
    rows: int | None
    tokens: int | None


@dataclass(frozen=True)
class DatasetLineage:
    name: str | None
    digest: str | None
    uri: str | None
    splits: list[DatasetSplit]
    rows: int | None
    tokens: int | None
    validation_report: dict[str, Any] | None
    manifest_found: bool
    # reviewed rows in the version: counts by origin, teachers, reviewers, production request ids
    # (the manifest's ``provenance`` summary; per-row lines in the version's provenance.jsonl)
    provenance: dict[str, Any] | None = None


@dataclass(frozen=True)
class Evaluation:
    run_id: str | None
    metrics: dict[str, float]
    gate: str | None
    gate_reasons: list[str]
    run_tags: dict[str, str]
    by_model: dict[str, dict[str, float]] = field(default_factory=dict)
    decision: dict[str, Any] | None = None


ROLLOUT_SOURCE_PREFIX = "rollout:"


def rollout_source(rollout_id: int) -> str:
    """The ledger ``source`` of an alias move made by rollout ``rollout_id`` (``rollout:<id>``)."""
    return f"{ROLLOUT_SOURCE_PREFIX}{rollout_id}"


@dataclass(frozen=True)
class ChampionRollout:
    """The rollout whose promotion last made this version ``champion`` (from the ledger)."""

    rollout_id: int
    at: datetime
    actor: str
    reason: str
    ledger_entry_id: int


def champion_rollout(entries: list[LedgerEntry], version: str) -> ChampionRollout | None:
    """The latest ``champion`` move to ``version`` whose source names a rollout, if any."""
    for e in reversed(entries):
        if e.alias == c.CHAMPION and e.to_version == version and e.source.startswith(ROLLOUT_SOURCE_PREFIX):
            rollout_id = _int(e.source.removeprefix(ROLLOUT_SOURCE_PREFIX))
            if rollout_id is not None:
                return ChampionRollout(rollout_id, e.at, e.actor, e.reason, e.id)
    return None


@dataclass(frozen=True)
class Routing:
    """How the gateway routed the model at ``at``: the routing change in force then.

    ``weight`` is the challenger's effective share in basis points (0..10,000); ``shares`` maps each
    version that answered traffic to its share in [0, 1] (a shadow challenger answers nobody).
    """

    at: datetime
    since: datetime
    cause: str
    champion: str | None
    challenger: str | None
    weight: int
    strategy: str
    experiment_id: str
    shares: dict[str, float]
    actor: str
    reason: str


def routing_from(snapshot: RoutingSnapshot, at: datetime) -> Routing:
    return Routing(
        at=at,
        since=snapshot.at,
        cause=snapshot.cause,
        champion=snapshot.champion,
        challenger=snapshot.challenger,
        weight=snapshot.weight,
        strategy=snapshot.strategy,
        experiment_id=snapshot.experiment_id,
        shares=snapshot.shares(),
        actor=snapshot.actor,
        reason=snapshot.reason,
    )


@dataclass(frozen=True)
class RequestAttempt:
    """One upstream attempt of a request, as the request log holds it."""

    role: str
    at: datetime
    version: str | None
    arm: str | None
    status_code: int
    error_kind: str | None
    latency_ms: float
    ttft_ms: float | None
    streamed: bool


@dataclass(frozen=True)
class ServedRequest:
    """Which version answered one request through the gateway, on which arm, at what weight.

    ``weight`` is the challenger's weight (basis points) in force when the request arrived and
    ``share`` the answering arm's share of traffic then (None for a pinned request or when no
    routing had been recorded).
    """

    request_id: str
    at: datetime
    model: str
    version: str | None
    arm: str | None
    status_code: int
    weight: int | None
    share: float | None
    user_key_hash: str | None
    feedback_score: float | None
    attempts: list[RequestAttempt]


@dataclass(frozen=True)
class Lineage:
    """The whole chain for one model version, as ``tuneops lineage`` shows it."""

    model: str
    ref: str
    alias: str | None
    at: datetime | None
    version: str
    version_aliases: list[str]
    version_created_at: datetime | None
    description: str
    source: str
    registration_run_id: str | None
    finetune: FineTuneRecord
    dataset: DatasetLineage
    evaluation: Evaluation
    flow_run_id: str | None
    ledger: list[LedgerEntry]
    generated_at: datetime
    warnings: list[str] = field(default_factory=list)
    routing: Routing | None = None
    request: ServedRequest | None = None
    trigger: Trigger | None = None  # why the run that made the version ran (drift: which check)
    checkpoint: CheckpointLineage | None = None  # which checkpoint, best epoch, overfitting check
    parent: ParentLineage | None = None  # the version it continued training from (finetune.from)

    def to_json_dict(self) -> dict[str, Any]:
        """The documented, stable JSON form (see docs/lineage-json.md)."""
        data = asdict(self)
        data = {"schema_version": SCHEMA_VERSION, **data}
        return json.loads(json.dumps(data, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _json_tag(value: str | None, default: Any) -> Any:
    if not value:
        return default
    try:
        return json.loads(value)
    except ValueError:
        return default


def resolve_model_version(
    store: RegistryStore, ledger: Ledger, ref: c.ModelRef, at: datetime | None
) -> tuple[RegisteredVersion, str | None]:
    """The version a reference names (at ``at``, from the ledger) and the alias it came through.

    Raises:
        UsageError: ``--at`` combined with an explicit version.
        VersionNotFoundError: nothing held the alias (at that time) or no such version.
    """
    if ref.version is not None:
        if at is not None:
            raise UsageError("--at needs an alias (NAME@ALIAS), not a version number")
        return store.get_version(ref.name, ref.version), None
    alias = ref.alias or c.CHAMPION
    if at is None:
        try:
            return store.version_by_alias(ref.name, alias), alias
        except VersionNotFoundError as exc:
            raise VersionNotFoundError(
                f"{ref.name}@{alias} is not set",
                hint=f"promote a version: tuneops promote {ref.name} VERSION",
            ) from exc
    history = ledger.history(ref.name, alias)
    held = c.version_at(history, alias, at)
    if held is None:
        first = history[0].at.isoformat() if history else None
        raise VersionNotFoundError(
            f"{ref.name}@{alias} was not set at {at.isoformat()} according to the promotion ledger",
            hint=f"the ledger's first {alias} entry is at {first}"
            if first
            else "the ledger has no entry for it",
        )
    return store.get_version(ref.name, held), alias


def build_lineage(
    store: RegistryStore,
    ledger: Ledger,
    ref: c.ModelRef,
    *,
    at: datetime | None = None,
    read_manifest: ManifestReader | None = None,
    routing_state: RoutingState | None = None,
) -> Lineage:
    """Follow every link from ``ref`` and return the typed lineage tree.

    With ``at`` and ``routing_state``, ``routing`` also says which versions the gateway was
    serving at ``at`` and with what share of traffic.
    """
    version, alias = resolve_model_version(store, ledger, ref, at)
    tags = version.tags
    warnings: list[str] = []
    routing = _routing_at(routing_state, ref.name, at, warnings) if at is not None else None

    def run_or_warn(run_id: str | None, what: str) -> RunSummary | None:
        if not run_id:
            warnings.append(f"no {what} run recorded on the version")
            return None
        try:
            return store.get_run(run_id)
        except RegistryError as exc:
            warnings.append(f"{what} run {run_id} unreachable: {exc.one_line()}")
            return None

    registration = run_or_warn(version.run_id, "registration")
    finetune_run = run_or_warn(
        tags.get(c.TAG_FINETUNE_RUN_ID)
        or (registration.tags.get(c.TAG_FINETUNE_RUN_ID) if registration else None),
        "fine-tune",
    )
    eval_run = run_or_warn(tags.get(c.TAG_EVAL_RUN_ID), "evaluation")
    if ref.alias or at is not None:
        history = ledger.history(ref.name, alias)
    else:
        history = [e for e in ledger.history(ref.name) if version.version in (e.to_version, e.from_version)]
    return Lineage(
        model=ref.name,
        ref=f"{ref.name}@{alias}" if alias else f"{ref.name}/{version.version}",
        alias=alias,
        at=at,
        version=version.version,
        version_aliases=sorted(version.aliases),
        version_created_at=version.created_at,
        description=version.description,
        source=version.source,
        registration_run_id=version.run_id,
        finetune=_finetune(tags, finetune_run),
        dataset=_dataset(tags, registration, read_manifest, warnings),
        evaluation=_evaluation(tags, eval_run, _decision(store, eval_run, warnings)),
        flow_run_id=tags.get(c.TAG_FLOW_RUN_ID),
        ledger=history,
        generated_at=utcnow(),
        warnings=warnings,
        routing=routing,
        trigger=trigger_of(store, eval_run, warnings),
        checkpoint=checkpoint_lineage(tags),
        parent=parent_lineage(tags),
    )


def _routing_at(
    routing_state: RoutingState | None, model: str, at: datetime, warnings: list[str]
) -> Routing | None:
    if routing_state is None:
        return None
    try:
        snapshot = routing_state.routing_at(model, at)
    except StoreError as exc:
        warnings.append(f"routing history unreadable: {exc.one_line()}")
        return None
    if snapshot is None:
        warnings.append(
            f"no routing recorded for {model} at or before {at.isoformat()} (gateway not serving)"
        )
        return None
    return routing_from(snapshot, at)


def build_request_lineage(
    store: RegistryStore,
    ledger: Ledger,
    request_log: RequestLog,
    routing_state: RoutingState,
    request_id: str,
    *,
    read_manifest: ManifestReader | None = None,
) -> Lineage:
    """Which version answered ``request_id`` (arm, weight then) and how that version was made.

    Raises:
        UsageError: the request is not in the request log, or no model version answered it.
    """
    attempts = request_log.attempts(request_id)
    if not attempts:
        raise UsageError(
            f"request {request_id!r} is not in the request log",
            hint="request ids are the gateway's x-request-id response header",
        )
    answer = next((a for a in attempts if a.role == "answer"), attempts[-1])
    if answer.version is None:
        raise UsageError(
            f"request {request_id!r} was answered by no model version"
            f" (status {answer.status_code}, {answer.error_kind or 'no error kind'})"
        )
    warnings: list[str] = []
    routing = _routing_at(routing_state, answer.model, answer.at, warnings)
    lineage = build_lineage(
        store, ledger, c.ModelRef(answer.model, version=answer.version), read_manifest=read_manifest
    )
    served = ServedRequest(
        request_id=request_id,
        at=answer.at,
        model=answer.model,
        version=answer.version,
        arm=answer.arm,
        status_code=answer.status_code,
        weight=routing.weight if routing else None,
        share=_arm_share(answer, routing),
        user_key_hash=answer.user_key_hash,
        feedback_score=answer.feedback_score,
        attempts=[_attempt(a) for a in attempts],
    )
    return replace(lineage, routing=routing, request=served, at=None, warnings=[*warnings, *lineage.warnings])


def _arm_share(answer: LoggedRequest, routing: Routing | None) -> float | None:
    """The answering version's share of traffic then; None for pinned requests (no share applied)."""
    if routing is None or answer.arm not in ("champion", "challenger") or answer.version is None:
        return None
    return routing.shares.get(answer.version)


def _attempt(record: LoggedRequest) -> RequestAttempt:
    return RequestAttempt(
        role=record.role,
        at=record.at,
        version=record.version,
        arm=record.arm,
        status_code=record.status_code,
        error_kind=record.error_kind,
        latency_ms=record.latency_ms,
        ttft_ms=record.ttft_ms,
        streamed=record.streamed,
    )


def _finetune(tags: dict[str, str], run: RunSummary | None) -> FineTuneRecord:
    metrics = run.metrics if run else {}
    hyperparameters = _json_tag(tags.get(c.TAG_HYPERPARAMETERS), {})
    return FineTuneRecord(
        job_id=tags.get(c.TAG_JOB_ID, ""),
        provider=tags.get(c.TAG_PROVIDER),
        base_model=tags.get(c.TAG_BASE_MODEL),
        endpoint_model=tags.get(c.TAG_ENDPOINT_MODEL),
        endpoint_base_url=tags.get(c.TAG_ENDPOINT_BASE_URL),
        hyperparameters=hyperparameters or (dict(run.params) if run else {}),
        trained_tokens=_int(tags.get(c.TAG_TRAINED_TOKENS)) or _int(metrics.get("trained_tokens")),
        estimated_cost=_float(tags.get(c.TAG_ESTIMATED_COST)),
        run_id=run.run_id if run else tags.get(c.TAG_FINETUNE_RUN_ID),
        run_params=dict(run.params) if run else {},
        run_metrics=dict(metrics),
    )


def _dataset(
    tags: dict[str, str],
    registration: RunSummary | None,
    read_manifest: ManifestReader | None,
    warnings: list[str],
) -> DatasetLineage:
    inputs = {i.tags.get("tuneops.split", i.name): i for i in (registration.inputs if registration else ())}
    any_input = next(iter(inputs.values()), None)
    name = any_input.name.rsplit("-", 1)[0] if any_input else None
    version_digest = any_input.tags.get("tuneops.version_digest") if any_input else None
    version_uri = any_input.tags.get("tuneops.version_uri") if any_input else None
    manifest: dict[str, Any] | None = None
    if read_manifest and version_uri:
        try:
            manifest = read_manifest(version_uri)
        except (StoreError, UsageError, OSError, ValueError) as exc:
            warnings.append(f"dataset manifest {name}@{version_digest} unreachable: {exc}")
    manifest_splits = (manifest or {}).get("splits", {})
    splits = []
    for split in ("train", "validation", "test"):
        digest = tags.get(f"{c.TAG_PREFIX}{split}_digest")
        found = inputs.get(split)
        if digest is None and found is None:
            continue
        info = manifest_splits.get(split, {})
        sha = digest or (found.tags.get(TAG_SHA256, found.digest) if found else "")
        if info.get("sha256") and info["sha256"] != sha:
            warnings.append(f"{split}: version tag digest {sha} differs from the manifest's {info['sha256']}")
        splits.append(
            DatasetSplit(
                split=split,
                sha256=sha,
                uri=found.source_uri if found else None,
                rows=_int(info.get("rows"))
                if info
                else _int(found.tags.get("tuneops.rows") if found else None),
                tokens=_int(info.get("tokens"))
                if info
                else _int(found.tags.get("tuneops.tokens") if found else None),
            )
        )
    if read_manifest and registration and not version_uri:
        warnings.append("dataset version URI not recorded on the registration run; manifest not read")
    return DatasetLineage(
        name=name,
        digest=version_digest,
        uri=version_uri,
        splits=splits,
        rows=_int((manifest or {}).get("rows")) or _sum([s.rows for s in splits]),
        tokens=_int((manifest or {}).get("tokens")) or _sum([s.tokens for s in splits]),
        validation_report=(manifest or {}).get("validation_report") or (manifest or {}).get("validation"),
        manifest_found=manifest is not None,
        provenance=(manifest or {}).get("provenance"),
    )


def _sum(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


DECISION_ARTIFACT = "evaluation/decision.json"


def _decision(store: RegistryStore, run: RunSummary | None, warnings: list[str]) -> dict[str, Any] | None:
    """The evaluation stage's gate decision artifact, when the run has one."""
    if run is None:
        return None
    try:
        found = store.load_json_artifact(run.run_id, DECISION_ARTIFACT)
    except (RegistryError, OSError, ValueError) as exc:
        warnings.append(f"{DECISION_ARTIFACT} of run {run.run_id} unreadable: {exc}")
        return None
    return found if isinstance(found, dict) else None


def group_metrics(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """``label.metric`` keys (the evaluation stage's naming) grouped by label."""
    grouped: dict[str, dict[str, float]] = {}
    for key, value in sorted(metrics.items()):
        label, dot, metric = key.partition(".")
        if dot:
            grouped.setdefault(label, {})[metric] = value
    return grouped


def _evaluation(tags: dict[str, str], run: RunSummary | None, decision: dict[str, Any] | None) -> Evaluation:
    run_tags = {k: v for k, v in (run.tags if run else {}).items() if k.startswith(c.TAG_PREFIX)}
    gate = tags.get(c.TAG_GATE) or run_tags.get(c.TAG_GATE)
    reasons = _json_tag(tags.get(c.TAG_GATE_REASONS) or run_tags.get(c.TAG_GATE_REASONS), [])
    if not reasons and decision:
        reasons = [
            str(check.get("message")) for check in decision.get("checks", []) if isinstance(check, dict)
        ]
    if gate is None and decision and isinstance(decision.get("passed"), bool):
        gate = c.GATE_PASSED if decision["passed"] else c.GATE_FAILED
    return Evaluation(
        run_id=run.run_id if run else tags.get(c.TAG_EVAL_RUN_ID),
        metrics=dict(sorted((run.metrics if run else {}).items())),
        gate=gate,
        gate_reasons=[str(r) for r in reasons] if isinstance(reasons, list) else [str(reasons)],
        run_tags=run_tags,
        by_model=group_metrics(run.metrics if run else {}),
        decision=decision,
    )
