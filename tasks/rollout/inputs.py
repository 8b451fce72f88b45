"""From the request log to the verdict's input: one :class:`ArmSample` per arm and window.

The challenger's evidence is every attempt its version made on the ``challenger`` arm (answers,
failovers that count against it) or, for shadow, its ``shadow`` copies; the champion's is its
answers on the ``champion`` arm. Pinned requests (smoke replays, ``NAME@alias``) are never
evidence about the split. An error is a 5xx or an upstream failure (``error_kind``); a client's
own 4xx says nothing about the model. Cost per request comes from the spec's prices (USD per
million tokens), when there are any.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from tuneops.requestlog import LoggedRequest, RequestLog, Role
from tuneops.tasks.rollout.rules import ArmSample
from tuneops.tasks.rollout.stats import Moments


@dataclass(frozen=True)
class Price:
    """USD per million prompt and completion tokens."""

    input_per_million: float = 0.0
    output_per_million: float = 0.0


def is_error(r: LoggedRequest) -> bool:
    return r.status_code >= 500 or r.error_kind is not None


def summarize(
    label: str, version: str | None, rows: Iterable[LoggedRequest], price: Price | None = None
) -> ArmSample:
    """Count one arm's rows into the verdict's summary."""
    rows = list(rows)
    ok = [r for r in rows if not is_error(r)]
    costs = [
        (
            (r.prompt_tokens or 0) * price.input_per_million
            + (r.completion_tokens or 0) * price.output_per_million
        )
        / 1e6
        for r in ok
        if price is not None and r.prompt_tokens is not None
    ]
    feedback = [r.feedback_score for r in rows if r.feedback_score is not None]
    return ArmSample(
        label=label,
        version=version,
        requests=len(rows),
        errors=len(rows) - len(ok),
        format_checked=sum(r.format_ok is not None for r in ok),
        format_ok=sum(bool(r.format_ok) for r in ok),
        refusal_checked=sum(r.refusal is not None for r in ok),
        refusals=sum(bool(r.refusal) for r in ok),
        latencies_ms=tuple(sorted(r.latency_ms for r in ok)),
        feedback=Moments.of(feedback),
        cost_usd=Moments.of(costs),
    )


def arm_rows(
    log: RequestLog,
    model: str,
    version: str,
    arm: str,
    since: datetime,
    until: datetime,
    *,
    shadow: bool = False,
) -> list[LoggedRequest]:
    """The rows of ``version`` served on ``arm`` in ``[since, until)`` (shadow copies if ``shadow``)."""
    roles: Sequence[Role] = ("shadow",) if shadow else ("answer", "failover")
    rows = log.window(model, since, until, versions=[version], roles=roles)
    return [r for r in rows if r.arm != "pinned" and (shadow or r.arm == arm)]
