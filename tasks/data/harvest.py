"""The data flywheel: served requests with good feedback become review candidates.

Reads the gateway's request log (``tuneops.requestlog``, never the gateway itself) for one
model's window and keeps an answered request only when its text was captured (a request logged
with capture off has no text and is never harvested, not even partly), its latest feedback score
is at least ``min_feedback``, and (by default) its answer passed the format check. The request's
messages (logged by the gateway as JSON) and the answer are PII-redacted
(``safety.rules.redact_pii``) before they are queued; the provenance keeps the request id, the
served model version, the feedback and what was redacted, so the dataset version's lineage can
name the production traffic a model learnt from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tuneops.requestlog import LoggedRequest, RequestLog
from tuneops.spec import HarvestConfig
from tuneops.tasks.data.review import QueueItem, ReviewQueue
from tuneops.tasks.evaluation.safety.rules import redact_pii


@dataclass(frozen=True)
class HarvestReport:
    """How many requests were read, why each skipped one was skipped, how many were queued."""

    read: int
    no_text: int
    low_feedback: int
    format_failed: int
    redacted: int
    queued: int


def harvestable(request: LoggedRequest, config: HarvestConfig) -> str | None:
    """Why ``request`` must not be harvested (``no_text``, ``low_feedback``, ``format_failed``), or None."""
    if not request.prompt_text or not request.response_text:
        return "no_text"
    if request.feedback_score is None or request.feedback_score < config.min_feedback:
        return "low_feedback"
    if config.require_format_ok and request.format_ok is not True:
        return "format_failed"
    return None


def _messages(prompt_text: str) -> list[dict[str, str]]:
    """The request's messages: the gateway logs them as a JSON list; anything else is one user turn."""
    try:
        messages = json.loads(prompt_text)
    except ValueError:
        messages = None
    if isinstance(messages, list) and all(isinstance(m, dict) and "role" in m for m in messages):
        return [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in messages]
    return [{"role": "user", "content": prompt_text}]


def _redacted_example(
    request: LoggedRequest, system_prompt: str | None
) -> tuple[dict[str, Any], dict[str, int]]:
    found: dict[str, int] = {}
    messages = _messages(request.prompt_text or "")
    messages.append({"role": "assistant", "content": request.response_text or ""})
    for message in messages:
        message["content"], counts = redact_pii(message["content"])
        for kind, n in counts.items():
            found[kind] = found.get(kind, 0) + n
    if system_prompt and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return {"messages": messages}, found


def harvest_requests(
    requests: Sequence[LoggedRequest],
    config: HarvestConfig,
    queue: ReviewQueue,
    *,
    system_prompt: str | None = None,
) -> HarvestReport:
    """Queue the harvestable ``requests`` (redacted) for review; re-harvesting queues nothing twice."""
    skipped = {"no_text": 0, "low_feedback": 0, "format_failed": 0}
    items, redacted = [], 0
    for request in requests:
        why = harvestable(request, config)
        if why is not None:
            skipped[why] += 1
            continue
        example, found = _redacted_example(request, system_prompt)
        redacted += bool(found)
        items.append(
            QueueItem(
                f"req-{request.request_id}",
                example,
                {
                    "origin": "harvest",
                    "request_id": request.request_id,
                    "model": request.model,
                    "model_version": request.version,
                    "feedback_score": request.feedback_score,
                    "served_at": request.at.isoformat(),
                    "pii_redacted": found,
                },
            )
        )
    queued = queue.add(items)
    return HarvestReport(
        len(requests), skipped["no_text"], skipped["low_feedback"], skipped["format_failed"], redacted, queued
    )


def harvest(
    state_db_url: str,
    model: str,
    config: HarvestConfig,
    queue: ReviewQueue,
    *,
    system_prompt: str | None = None,
    now: datetime | None = None,
) -> HarvestReport:
    """Harvest the last ``config.window_hours`` of ``model``'s answered requests into ``queue``."""
    until = now or datetime.now(UTC)
    log = RequestLog.open(state_db_url)
    try:
        requests = log.window(model, until - timedelta(hours=config.window_hours), until)
    finally:
        log.close()
    return harvest_requests(requests, config, queue, system_prompt=system_prompt)
