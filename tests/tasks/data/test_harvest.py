"""Harvest: only answered requests with captured text, good feedback and a passing format check,
PII-redacted, into the review queue with their request ids; a real request log in SQLite."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tuneops.requestlog import RequestLog, RequestRecord, insert_records
from tuneops.spec import HarvestConfig
from tuneops.tasks.data.harvest import harvest
from tuneops.tasks.data.review import ReviewQueue, export_reviewed, provenance_path

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def record(rid: str, *, text: bool = True, format_ok: bool = True, hours_ago: float = 1) -> RequestRecord:
    messages = [{"role": "user", "content": f"Claim {rid}: call me on 555-123-4567 or mail jo@example.com"}]
    return RequestRecord(
        request_id=rid,
        model="claims-triage",
        at=NOW - timedelta(hours=hours_ago),
        status_code=200,
        latency_ms=12.0,
        version="3",
        prompt_text=json.dumps(messages) if text else None,
        response_text=f"Decision: APPROVE\\nReason: ok {rid}\\nNext step: card 4111 1111 1111 1111"
        if text
        else None,
        format_ok=format_ok,
    )


def test_harvest_takes_only_good_captured_formatted_requests_redacted_with_request_ids(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    log = RequestLog.open(url)
    records = [
        record("good-1"),
        record("good-2"),
        record("no-capture", text=False),
        record("bad-format", format_ok=False),
        record("low-feedback"),
        record("no-feedback"),
        record("too-old", hours_ago=24 * 30),
    ]
    with log.engine.begin() as conn:
        insert_records(conn, records)
    for rid, score in [
        ("good-1", 1.0),
        ("good-2", 0.9),
        ("no-capture", 1.0),
        ("bad-format", 1.0),
        ("low-feedback", 0.2),
        ("too-old", 1.0),
    ]:
        log.add_feedback(rid, score)
    log.close()

    queue = ReviewQueue(tmp_path / "queue")
    config = HarvestConfig(min_feedback=0.8)
    report = harvest(url, "claims-triage", config, queue, system_prompt="You triage claims.", now=NOW)
    assert (report.read, report.no_text, report.low_feedback, report.format_failed) == (6, 1, 2, 1)
    assert (report.queued, report.redacted) == (2, 2)
    items = queue.items()
    assert [i.provenance["request_id"] for i in items] == ["good-1", "good-2"]
    text = json.dumps([i.example for i in items])
    assert "555-123-4567" not in text and "jo@example.com" not in text and "4111" not in text
    assert "[PHONE]" in text and "[EMAIL]" in text and "[CARD]" in text
    assert items[0].example["messages"][0] == {"role": "system", "content": "You triage claims."}
    assert items[0].provenance["pii_redacted"] == {"phone": 1, "email": 1, "card": 1}
    assert harvest(url, "claims-triage", config, queue, now=NOW).queued == 0  # re-harvest: nothing twice

    queue.decide("req-good-1", "accept", "ann")
    queue.decide("req-good-2", "reject", "ann")
    target = tmp_path / "reviewed.jsonl"
    assert export_reviewed(queue, target) == 1
    [prov] = [json.loads(x) for x in provenance_path(target).read_text().splitlines()]
    assert (prov["origin"], prov["request_id"], prov["model_version"]) == ("harvest", "good-1", "3")
