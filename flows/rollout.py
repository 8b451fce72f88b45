"""The ``rollout`` flow: take the ``challenger`` to ``champion`` step by step, or back out.

    begin (or resume) → [set the step's weight → judge every interval → advance | roll back | abort]
                     → (approval) → promote

The step plan comes from the strategy (``tasks/rollout/rules.plan_rollout``), the verdict from the
request log (``judge_rollout_step``); both are pure. Progress lives in the state database
(``tasks/rollout/state``), so a killed run re-run resumes the step it was in with that step's
clock, and a promotion already made is never made twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run

from tuneops import events
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec, load_spec
from tuneops.tasks.rollout.planning import plan_for
from tuneops.tasks.rollout.report import guardrail_table, publish_rollout_report
from tuneops.tasks.rollout.rules import RolloutVerdict, Step, next_transition
from tuneops.tasks.rollout.state import RolloutRecord, RolloutStore, Status
from tuneops.tasks.rollout.tasks import (
    GatewayAccess,
    begin_rollout,
    judge_rollout_step,
    promote_challenger,
    roll_back_challenger,
    set_step_weight,
    smoke_test_challenger,
)


class Approval(RunInput):
    """What a human answers before the final promotion (Prefect UI form or ``tuneops rollout approve``)."""

    approve: bool = False
    reason: str = ""


@dataclass(frozen=True)
class RolloutOutcome:
    """How the rollout ended (``running`` only when ``max_intervals`` stopped the loop)."""

    model: str
    challenger_version: str
    rollout_id: int
    status: Status
    reason: str
    resumed: bool


@flow(name="rollout", validate_parameters=True)
def rollout(
    spec_path: str = "tuneops.yaml",
    version: str | None = None,
    strategy: str | None = None,
    interval_seconds: float | None = None,
    max_intervals: int | None = None,
    gateway_url: str | None = None,
) -> RolloutOutcome:
    """Roll the challenger out by the spec's strategy, judged on live traffic every interval.

    Args:
        spec_path: the project's ``tuneops.yaml``; settings come from its folder and environment.
        version: the version to roll out (default: the ``challenger`` alias).
        strategy: override the spec's ``rollout.strategy`` for a new rollout.
        interval_seconds: override ``rollout.analysis_interval_seconds``.
        max_intervals: stop looking after this many intervals (the rollout stays resumable).
        gateway_url: the gateway's ``/v1`` root for blue-green's pinned smoke replay (default
            the settings' ``gateway_url``; its key is the first of ``TUNEOPS_GATEWAY_API_KEYS``).
    """
    log = get_run_logger()
    spec, project_dir = load_spec(Path(spec_path))
    settings = TuneopsSettings.load(project_dir)
    config = spec.rollout
    run_id = str(flow_run.get_id() or "") or None
    record, resumed = begin_rollout(spec, settings, version, strategy or config.strategy, run_id)
    plan = plan_for(config, record.strategy)  # type: ignore[arg-type]
    interval = interval_seconds or config.analysis_interval_seconds
    store = RolloutStore.open(settings.state_db_url or "")
    gateway = GatewayAccess.from_settings(settings, gateway_url)
    log.info("rollout %s of %s v%s (%s), %s at step %d", record.id, record.model, record.challenger_version,
             record.strategy, "resumed" if resumed else "started", record.step_index)  # fmt: skip
    try:
        looks = 0
        while (record := store.get(record.id)).active:
            if record.abort_requested:
                _end(store, settings, record, plan, "aborted", record.abort_requested, roll_back=True)
                continue
            step = plan[record.step_index]
            if not step.judged:
                _unjudged_step(store, spec, settings, record, plan, step, config.approval_timeout_seconds,
                               approval=config.approval == "required", poll=min(interval, 10.0),
                               gateway=gateway)  # fmt: skip
                continue
            set_step_weight(settings, record, step)
            judgement = judge_rollout_step(spec, settings, record, step)
            verdict = judgement.verdict
            transition = next_transition(plan, record.step_index, verdict)
            store.append_step(
                record.id, step_index=record.step_index, step_name=step.name, weight=step.weight,
                action=verdict.action, challenger_requests=judgement.challenger_step_requests,
                champion_requests=judgement.champion_step_requests, summary=verdict.summary(),
                verdict=verdict.to_dict(),
            )  # fmt: skip
            if transition == "stay":
                looks += 1
                if max_intervals is not None and looks >= max_intervals:
                    break
                time.sleep(interval)
            elif transition in ("rollback", "abort"):
                status: Status = "rolled-back" if transition == "rollback" else "aborted"
                _end(store, settings, record, plan, status, "; ".join(verdict.reasons), roll_back=True)
            elif transition == "done":
                _end(store, settings, record, plan, "promoted", "; ".join(verdict.reasons), verdict=verdict)
            else:
                _advance(store, record, plan, record.step_index + 1)
    finally:
        record = store.get(record.id)
        store.close()
    publish_rollout_report(spec, settings, record)
    return RolloutOutcome(
        record.model, record.challenger_version, record.id, record.status, record.reason, resumed
    )


def _advance(store: RolloutStore, record: RolloutRecord, plan: tuple[Step, ...], index: int) -> RolloutRecord:
    step = plan[index]
    updated = store.advance(record.id, index, switched=step.kind == "switch")
    store.append_step(record.id, step_index=index, step_name=step.name, weight=step.weight, action="enter",
                      summary=f"entered step {step.name}")  # fmt: skip
    events.emit(events.ROLLOUT_STEP, record.model, f"rollout {record.id}: step {step.name}",
                version=record.challenger_version)  # fmt: skip
    return updated


def _unjudged_step(
    store: RolloutStore, spec: Spec, settings: TuneopsSettings, record: RolloutRecord, plan: tuple[Step, ...],
    step: Step, timeout: float, *, approval: bool, poll: float, gateway: GatewayAccess,
) -> None:  # fmt: skip
    """Smoke (replay check), switch and promote: the steps that act once instead of being judged."""
    if step.kind == "smoke":
        smoke = smoke_test_challenger(spec, settings, record, gateway)
        store.append_step(record.id, step_index=record.step_index, step_name=step.name, weight=0,
                          action="smoke-passed" if smoke.passed else "smoke-failed",
                          challenger_requests=smoke.compared, summary=smoke.summary())  # fmt: skip
        if not smoke.passed:  # the live endpoint is not what was evaluated: never switch to it
            _end(store, settings, record, plan, "rolled-back", smoke.summary(), roll_back=True)
            return
        _advance(store, record, plan, record.step_index + 1)
        return
    if approval and not _approved(store, settings, record, timeout, poll):
        return
    reason = f"rollout {record.id} ({record.strategy}): guardrails held at every step"
    promote_challenger(settings, record, reason)
    if step.kind == "switch":
        _advance(store, record, plan, record.step_index + 1)
        return
    last = store.steps(record.id)
    verdict_summary = next((s.summary for s in reversed(last) if s.verdict), reason)
    store.set_status(record.id, "promoted", verdict_summary)
    store.append_step(record.id, step_index=record.step_index, step_name=step.name, weight=step.weight,
                      action="promoted", summary=reason)  # fmt: skip


def _approved(
    store: RolloutStore, settings: TuneopsSettings, record: RolloutRecord, timeout: float, poll: float
) -> bool:
    """Pause for a human's answer; a rejection rolls back, silence past ``timeout`` aborts."""
    steps = store.steps(record.id)
    last = next((s.verdict for s in reversed(steps) if s.verdict), None)
    description = (f"Approve promoting {record.model} v{record.challenger_version} to champion?\n\n"
                   + guardrail_table(last))  # fmt: skip
    store.set_status(record.id, "awaiting-approval")
    try:
        answer = pause_flow_run(
            wait_for_input=Approval.with_initial_data(description=description, approve=False),
            timeout=max(1, round(timeout)),
            poll_interval=max(1, round(poll)),
        )
    except FlowPauseTimeout:
        record = store.set_status(record.id, "running")
        _end(
            store,
            settings,
            record,
            (),
            "aborted",
            f"approval not given within {timeout:.0f}s",
            roll_back=True,
        )
        return False
    store.set_status(record.id, "running")
    if answer is None or not answer.approve:
        why = f"rejected: {answer.reason if answer else 'no answer'}"
        store.append_step(record.id, step_index=record.step_index, step_name="approval", weight=0,
                          action="rejected", summary=why)  # fmt: skip
        _end(store, settings, record, (), "rolled-back", why, roll_back=True)
        return False
    store.append_step(
        record.id, step_index=record.step_index, step_name="approval", weight=0, action="approved",
        summary=f"approved: {answer.reason}",
    )  # fmt: skip
    return True


def _end(
    store: RolloutStore, settings: TuneopsSettings, record: RolloutRecord, plan: tuple[Step, ...],
    status: Status, reason: str, *, roll_back: bool = False, verdict: RolloutVerdict | None = None,
) -> None:  # fmt: skip
    """Finish the rollout: roll back first (weight 0 / alias back), then record why."""
    if roll_back:
        roll_back_challenger(settings, record, reason)
    elif status == "promoted" and verdict is not None:
        events.emit(events.ROLLOUT_STEP, record.model, f"rollout {record.id}: bake held: {reason}",
                    version=record.challenger_version)  # fmt: skip
    store.set_status(record.id, status, reason)
    name = plan[record.step_index].name if plan else "approval"
    store.append_step(record.id, step_index=record.step_index, step_name=name, weight=0, action=status,
                      summary=reason)  # fmt: skip
