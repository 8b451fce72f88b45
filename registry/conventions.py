"""Registry conventions and promotion rules: pure functions, no MLflow.

Names (tags, aliases) are the contract with the gateway and the rollout stage, so they live in
one place. Promotion rules return a :class:`PromotionDecision` instead of raising: a refusal is a
result the CLI turns into a one-line message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from tuneops.registry.types import AliasMove, LedgerEntry, PromotionIntent, RegistrationRequest

TAG_PREFIX = "tuneops."
TAG_PROVIDER = "tuneops.provider"
TAG_BASE_MODEL = "tuneops.base_model"
TAG_ENDPOINT_MODEL = "tuneops.endpoint_model"
TAG_ENDPOINT_BASE_URL = "tuneops.endpoint_base_url"
TAG_JOB_ID = "tuneops.job_id"
TAG_TRAIN_DIGEST = "tuneops.train_digest"
TAG_VALIDATION_DIGEST = "tuneops.validation_digest"
TAG_TEST_DIGEST = "tuneops.test_digest"
TAG_EVAL_RUN_ID = "tuneops.eval_run_id"
TAG_GATE = "tuneops.gate"
TAG_GATE_REASONS = "tuneops.gate_reasons"
TAG_FLOW_RUN_ID = "tuneops.flow_run_id"
TAG_FINETUNE_RUN_ID = "tuneops.finetune_run_id"
TAG_HYPERPARAMETERS = "tuneops.hyperparameters"
TAG_TRAINED_TOKENS = "tuneops.trained_tokens"
TAG_ESTIMATED_COST = "tuneops.estimated_cost"
TAG_RUN_KIND = "tuneops.kind"
TAG_FINE_TUNED_MODEL = "tuneops.fine_tuned_model"
TAG_DATASET = "tuneops.dataset"
# incremental fine-tuning (finetune.from): the version training continued from
TAG_PARENT_VERSION = "tuneops.parent_version"
TAG_PARENT_MODEL = "tuneops.parent_model"
TAG_PARENT_DATASET = "tuneops.parent_dataset"
TAG_PARENT_TRAIN_DIGEST = "tuneops.parent_train_digest"
# which checkpoint of the job this version is, and the job's overfitting check
TAG_CHECKPOINT = "tuneops.checkpoint"
TAG_CHECKPOINT_STEP = "tuneops.checkpoint_step"
TAG_CHECKPOINT_EPOCH = "tuneops.checkpoint_epoch"
TAG_BEST_EPOCH = "tuneops.best_epoch"
TAG_BEST_STEP = "tuneops.best_step"
TAG_STOPPED_EARLY = "tuneops.stopped_early"
TAG_VALIDATION_LOSS_RISE = "tuneops.validation_loss_rise"
TAG_TRAINING = "tuneops.training"
RUN_KIND_REGISTRATION = "registration"
RUN_KIND_FINETUNE = "finetune"

GATE_PASSED = "passed"
GATE_FAILED = "failed"

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)
PROMOTABLE_ALIASES = (CHAMPION, CHALLENGER)

OBSERVED_ACTOR = "unknown (observed)"

_MAX_TAG_VALUE = 5000


def _digest_tag(split: str) -> str:
    return f"{TAG_PREFIX}{split}_digest"


def version_tags(request: RegistrationRequest) -> dict[str, str]:
    """The ``tuneops.*`` tags of a model version registered from ``request``.

    Hyperparameters, tokens and cost are copied onto the version so lineage survives even when
    the fine-tune run is unreachable. No secret is ever part of a request, so none can leak here.
    """
    tags: dict[str, str] = {
        TAG_PROVIDER: request.provider,
        TAG_BASE_MODEL: request.base_model,
        TAG_ENDPOINT_MODEL: request.endpoint_model,
        TAG_ENDPOINT_BASE_URL: request.endpoint_base_url,
        TAG_JOB_ID: request.job_id,
        TAG_HYPERPARAMETERS: json.dumps(request.hyperparameters, sort_keys=True, default=str),
    }
    for link in request.datasets:
        tags[_digest_tag(link.split)] = link.digest
    optional = {
        TAG_EVAL_RUN_ID: request.eval_run_id,
        TAG_FLOW_RUN_ID: request.flow_run_id,
        TAG_FINETUNE_RUN_ID: request.finetune_run_id,
        TAG_TRAINED_TOKENS: None if request.trained_tokens is None else str(request.trained_tokens),
        TAG_ESTIMATED_COST: None if request.estimated_cost is None else repr(float(request.estimated_cost)),
    }
    tags.update({k: v for k, v in optional.items() if v})
    if request.gate_passed is not None:
        tags[TAG_GATE] = GATE_PASSED if request.gate_passed else GATE_FAILED
        tags[TAG_GATE_REASONS] = json.dumps(list(request.gate_reasons))
    for key, value in request.extra_tags.items():
        name = key if key.startswith(TAG_PREFIX) else TAG_PREFIX + key
        tags.setdefault(name, value)
    return {k: v[:_MAX_TAG_VALUE] for k, v in tags.items()}


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of the promotion rules: the alias moves to make, or why none may be made."""

    allowed: bool
    moves: tuple[AliasMove, ...] = ()
    refusal: str | None = None
    needs_force: bool = False


def plan_promotion(
    *,
    alias: str,
    to_version: str,
    current: Mapping[str, str],
    gate: str | None,
    force: bool = False,
    reason: str = "",
) -> PromotionDecision:
    """Decide the alias moves for putting ``alias`` on ``to_version``.

    Rules: only ``champion`` and ``challenger`` are promoted by hand (``previous`` follows);
    moving ``champion`` keeps the old champion as ``previous``; a version that becomes champion
    stops being the challenger (its rollout is over); ``champion`` onto a version whose gate did
    not pass (failed or never recorded) needs ``force`` and a reason; a reason is always required.

    Args:
        alias: the alias to move.
        to_version: the target version.
        current: every alias of the model now, alias -> version.
        gate: the target's ``tuneops.gate`` tag (``passed``/``failed``/None).
        force: the user accepted overriding the gate.
        reason: why; recorded in the ledger.
    """
    if alias not in PROMOTABLE_ALIASES:
        return PromotionDecision(
            False,
            refusal=f"alias {alias!r} cannot be set by hand; use one of {', '.join(PROMOTABLE_ALIASES)} "
            f"('{PREVIOUS}' follows the champion)",
        )
    if not reason.strip():
        return PromotionDecision(False, refusal='a promotion needs a reason: pass --reason "..."')
    if alias == CHAMPION and gate != GATE_PASSED and not force:
        what = "failed its quality gate" if gate == GATE_FAILED else "has no recorded gate result"
        return PromotionDecision(
            False,
            refusal=f"version {to_version} {what}; to make it champion anyway pass --force with a --reason",
            needs_force=True,
        )
    if current.get(alias) == to_version:
        return PromotionDecision(True)
    if alias == CHALLENGER:
        if current.get(CHAMPION) == to_version:
            return PromotionDecision(False, refusal=f"version {to_version} is already the champion")
        return PromotionDecision(True, (AliasMove(CHALLENGER, current.get(CHALLENGER), to_version),))
    moves: list[AliasMove] = []
    old = current.get(CHAMPION)
    if old is not None and current.get(PREVIOUS) != old:
        moves.append(AliasMove(PREVIOUS, current.get(PREVIOUS), old))
    moves.append(AliasMove(CHAMPION, old, to_version))
    if current.get(CHALLENGER) == to_version:
        moves.append(AliasMove(CHALLENGER, to_version, None))
    return PromotionDecision(True, tuple(moves))


def diff_aliases(observed: Mapping[str, str], recorded: Mapping[str, str | None]) -> tuple[AliasMove, ...]:
    """Alias moves that happened in MLflow but are not in the ledger, in a stable order.

    ``recorded`` is the ledger's last known target per alias (None = unset); an alias absent
    from both sides never existed and yields nothing.
    """
    moves = []
    for alias in sorted(set(observed) | set(recorded)):
        now, known = observed.get(alias), recorded.get(alias)
        if now != known:
            moves.append(AliasMove(alias, known, now))
    return tuple(moves)


def last_known(entries: Iterable[LedgerEntry]) -> dict[str, str | None]:
    """The ledger's view of every alias: the target of its most recent entry."""
    state: dict[str, str | None] = {}
    for entry in sorted(entries, key=lambda e: (e.at, e.id)):
        state[entry.alias] = entry.to_version
    return state


def version_at(entries: Iterable[LedgerEntry], alias: str, at: datetime) -> str | None:
    """Which version ``alias`` pointed to at ``at``, according to the ledger (None if unset).

    Entries must be timezone-aware like ``at``; an entry exactly at ``at`` counts as done.
    """
    held: str | None = None
    for entry in sorted(entries, key=lambda e: (e.at, e.id)):
        if entry.alias != alias:
            continue
        if entry.at > at:
            break
        held = entry.to_version
    return held


@dataclass(frozen=True)
class ModelRef:
    """``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION`` as typed by a user."""

    name: str
    alias: str | None = None
    version: str | None = None


_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REF = re.compile(rf"^(?P<name>{_NAME})(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[0-9]+))?$")


def parse_model_ref(text: str) -> ModelRef | None:
    """Parse a model reference; None when it is not one (the caller words the error)."""
    match = _REF.match(text.strip())
    if match is None:
        return None
    return ModelRef(match["name"], match["alias"], match["version"])


def match_intent(
    move: AliasMove, intents: Iterable[PromotionIntent], entries: Iterable[LedgerEntry]
) -> PromotionIntent | None:
    """The open intent that explains an observed move, if one does.

    It must name the same alias and target, and be newer than the alias's last ledger row, so
    an intent abandoned long ago cannot claim a later hand-made move.
    """
    last = max((e.at for e in entries if e.alias == move.alias), default=None)
    candidates = [
        i
        for i in intents
        if i.alias == move.alias and i.to_version == move.to_version and (last is None or i.at >= last)
    ]
    return max(candidates, key=lambda i: i.id, default=None)
