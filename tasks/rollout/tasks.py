"""Thin Prefect tasks of the ``rollout`` flow: each side effect once, each read typed.

Weights go through :class:`~tuneops.routing_state.RoutingState` (what the gateway reads), alias
moves through :mod:`tuneops.registry.promotion` (intent, move, ledger row) with actor ``rollout``
and source ``rollout:<id>`` (how ``tuneops lineage`` names the rollout that made a champion),
progress through :class:`~tuneops.tasks.rollout.state.RolloutStore`. Every writer is idempotent:
setting a weight that is set, promoting a version that is champion, or advancing to the step the
rollout is in changes nothing, so a re-run after a crash repeats no effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE

from tuneops import events
from tuneops.append_only import utcnow
from tuneops.errors import UserError
from tuneops.registry.conventions import CHALLENGER, CHAMPION
from tuneops.registry.ledger import Ledger
from tuneops.registry.lineage import rollout_source
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.promotion import promote, rollback
from tuneops.requestlog import RequestLog
from tuneops.routing_state import RoutingState
from tuneops.settings import DEFAULT_GATEWAY_URL, TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.rollout.inputs import Price, arm_rows, summarize
from tuneops.tasks.rollout.planning import policy_for
from tuneops.tasks.rollout.rules import RolloutVerdict, SmokeVerdict, Step, StepProgress, judge, judge_smoke
from tuneops.tasks.rollout.smoke import replay_pinned, smoke_rows
from tuneops.tasks.rollout.state import RolloutRecord, RolloutStore

ACTOR = "rollout"


def _url(settings: TuneopsSettings) -> str:
    return settings.state_db_url or ""


def experiment_id(record: RolloutRecord) -> str:
    """The gateway's bucket salt for this rollout: a new rollout reshuffles users."""
    return f"rollout-{record.id}"


@task(name="begin-rollout", cache_policy=NO_CACHE)
def begin_rollout(
    spec: Spec, settings: TuneopsSettings, version: str | None, strategy: str, flow_run_id: str | None
) -> tuple[RolloutRecord, bool]:
    """The rollout to drive: the unfinished one of this challenger (resumed) or a new one.

    Raises:
        UserError: no challenger to roll out, or it is already the champion with no rollout left.
    """
    model = spec.model.name
    aliases = RegistryStore(settings.tracking_uri or "", settings.artifact_root).aliases(model)
    challenger = version or aliases.get(CHALLENGER)
    store = RolloutStore.open(_url(settings))
    try:
        latest = store.latest(model)
        if challenger is None:
            promoted = latest is not None and aliases.get(CHAMPION) == latest.challenger_version
            if latest is not None and (latest.active or promoted):  # the alias left when it was promoted
                return latest, True
            raise UserError(f"{model} has no '{CHALLENGER}' version to roll out", hint="pass --version N")
        if aliases.get(CHAMPION) == challenger:
            if latest is not None and latest.challenger_version == challenger:
                return latest, True  # the flow finishes (or reports) it: never promotes twice
            raise UserError(f"version {challenger} of {model} is already the champion")
        return store.begin(model, challenger, aliases.get(CHAMPION), strategy, flow_run_id=flow_run_id)
    finally:
        store.close()


@task(name="set-step-weight", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def set_step_weight(settings: TuneopsSettings, record: RolloutRecord, step: Step) -> bool:
    """Give the challenger the step's share of traffic (shadow copies for a shadow step)."""
    weight = step.weight if step.kind in ("weight", "shadow") else 0
    strategy = "shadow" if step.kind == "shadow" else record.strategy
    routing = RoutingState.open(_url(settings))
    try:
        change = routing.set_rollout(
            record.model, challenger_version=record.challenger_version, weight=weight, strategy=strategy,
            experiment_id=experiment_id(record), actor=ACTOR, reason=f"rollout {record.id}: step {step.name}",
        )  # fmt: skip
    finally:
        routing.close()
    return change.changed


def _prices(spec: Spec) -> tuple[Price | None, Price | None]:
    def price(label: str) -> Price | None:
        p = spec.evaluation.prices.get(label)  # type: ignore[call-overload]
        return None if p is None else Price(p.input_per_million_tokens, p.output_per_million_tokens)

    return price("candidate"), price("champion")


@dataclass(frozen=True)
class Judgement:
    """A verdict and the step traffic it rested on."""

    verdict: RolloutVerdict
    challenger_step_requests: int
    champion_step_requests: int


@task(name="judge-rollout-step", cache_policy=NO_CACHE)
def judge_rollout_step(spec: Spec, settings: TuneopsSettings, record: RolloutRecord, step: Step) -> Judgement:
    """Read both arms from the request log and judge the step (pure verdict)."""
    now = utcnow()
    model, ch, cp = record.model, record.challenger_version, record.champion_version
    ch_price, cp_price = _prices(spec)
    log = RequestLog.open(_url(settings))
    try:
        if step.baseline == "before-switch":
            # Blue-green bake: the new champion since the switch vs the old one before it.
            switched = record.switched_at or record.step_started_at
            ch_rows = log.window(model, switched, now, versions=[ch])
            ch_rows = [r for r in ch_rows if r.arm != "pinned"]
            lookback = switched - timedelta(seconds=max(step.min_seconds, 3600.0))
            cp_rows = [
                r for r in log.window(model, lookback, switched, versions=[cp or ""]) if r.arm != "pinned"
            ]
            ch_step, cp_step = ch_rows, cp_rows
        else:
            shadow = step.kind == "shadow"
            ch_rows = arm_rows(log, model, ch, "challenger", record.started_at, now, shadow=shadow)
            cp_rows = arm_rows(log, model, cp or "", "champion", record.started_at, now)
            ch_step = [r for r in ch_rows if r.at >= record.step_started_at]
            cp_step = [r for r in cp_rows if r.at >= record.step_started_at]
    finally:
        log.close()
    progress = StepProgress(
        elapsed_seconds=(now - record.started_at).total_seconds(),
        step_elapsed_seconds=(now - record.step_started_at).total_seconds(),
        challenger_step_requests=len(ch_step),
        champion_step_requests=len(cp_step),
        required_requests=step.min_requests,
        min_step_seconds=step.min_seconds,
    )
    verdict = judge(
        summarize("challenger", ch, ch_rows, ch_price),
        summarize("champion", cp, cp_rows, cp_price),
        policy_for(spec.rollout),
        progress,
    )
    return Judgement(verdict, len(ch_step), len(cp_step))


@task(name="promote-challenger", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def promote_challenger(settings: TuneopsSettings, record: RolloutRecord, reason: str) -> bool:
    """``champion`` <- challenger (``previous`` <- old champion), ledgered with actor ``rollout``.

    Returns whether an alias moved: a re-run after the move moves nothing and emits nothing.
    """
    ledger = Ledger.open(_url(settings))
    try:
        result = promote(
            RegistryStore(settings.tracking_uri or "", settings.artifact_root), ledger, record.model,
            record.challenger_version, CHAMPION, reason=reason, actor=ACTOR, source=rollout_source(record.id),
        )  # fmt: skip
    finally:
        ledger.close()
    routing = RoutingState.open(_url(settings))
    try:  # the challenger is the champion now: it needs no share of its own
        routing.set_rollout(record.model, challenger_version=None, weight=0, actor=ACTOR,
                            reason=f"rollout {record.id}: promoted")  # fmt: skip
    finally:
        routing.close()
    if result.changed:
        events.emit(events.ROLLOUT_PROMOTED, record.model, reason, version=record.challenger_version)
    return result.changed


@task(name="roll-back-challenger", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def roll_back_challenger(settings: TuneopsSettings, record: RolloutRecord, reason: str) -> None:
    """Weight 0 for the challenger; after a blue-green switch, ``champion`` back to ``previous``."""
    routing = RoutingState.open(_url(settings))
    try:
        routing.set_rollout(record.model, challenger_version=record.challenger_version, weight=0,
                            actor=ACTOR, reason=f"rollout {record.id}: rolled back: {reason}")  # fmt: skip
    finally:
        routing.close()
    store = RegistryStore(settings.tracking_uri or "", settings.artifact_root)
    if store.aliases(record.model).get(CHAMPION) == record.challenger_version:
        ledger = Ledger.open(_url(settings))
        try:
            rollback(
                store, ledger, record.model, reason=reason, actor=ACTOR, source=rollout_source(record.id)
            )
        finally:
            ledger.close()
    events.emit(events.ROLLOUT_ROLLED_BACK, record.model, reason, version=record.challenger_version)


@dataclass(frozen=True)
class GatewayAccess:
    """Where the gateway answers (its ``/v1`` root) and the bearer key to send, if it asks for one."""

    url: str = DEFAULT_GATEWAY_URL
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: TuneopsSettings, url: str | None = None) -> GatewayAccess:
        """``url`` (default: the settings' ``gateway_url``) and the first of their gateway keys."""
        keys = settings.gateway_keys
        return cls(url or settings.gateway_url, keys[0] if keys else None)


@task(name="smoke-test-challenger", cache_policy=NO_CACHE)
def smoke_test_challenger(
    spec: Spec, settings: TuneopsSettings, record: RolloutRecord, gateway: GatewayAccess
) -> SmokeVerdict:
    """Replay evaluated rows through the gateway pinned to the challenger; judge the answers."""
    version = record.challenger_version
    try:
        rows, full = smoke_rows(settings, record.model, version, spec.rollout.smoke_rows)
    except UserError as exc:
        return SmokeVerdict(False, 0, 0, 1.0, (), (exc.one_line(),))
    cases = replay_pinned(
        gateway.url, gateway.api_key, record.model, rows, temperature=spec.evaluation.temperature,
        max_tokens=spec.evaluation.max_tokens, seed=spec.finetune.seed,
    )  # fmt: skip
    verdict = judge_smoke(cases, version=version)
    if not full:
        note = "test split out of reach: replayed the logged questions without their system prompt"
        verdict = replace(verdict, reasons=(*verdict.reasons, note))
    return verdict
