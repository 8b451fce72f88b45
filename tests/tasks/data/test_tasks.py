"""The data stage's review-loop tasks inside Prefect flows, as a retrain flow would call them: a
teacher over real HTTP (the chat stub) and real embeddings for ``synthesize-examples``, a real
request log for ``harvest-served-requests``, the real review queue in between, then
``export-accepted`` and ``version-dataset`` of the spec's data folder: the version holds the
accepted rows of both queues with their provenance, and a second export + version changes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tuneops.requestlog import RequestLog, RequestRecord, insert_records
from tuneops.settings import TuneopsSettings
from tuneops.spec import load_spec
from tuneops.tasks.data.review import ReviewQueue

from .conftest import valid_rows, write_jsonl

pytestmark = pytest.mark.slow


def teacher(model: str, messages: list) -> str:
    topics = ["a stolen bicycle", "a burst pipe", "hail on the roof"]
    return "\n".join(
        json.dumps({"user": f"Claim: {t}.", "assistant": f"Decision: REVIEW\nReason: {t}.\nNext step: call."})
        for t in topics
    )


def test_synthesize_harvest_export_and_version_inside_flows(tmp_path: Path, prefect_harness) -> None:
    from prefect import flow

    from tuneops.tasks.data.tasks import (
        export_accepted,
        harvest_served_requests,
        synthesize_examples,
        version_dataset,
    )
    from tuneops.testing.chat_stub import StubConfig, running_chat_stub

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    write_jsonl(project / "data" / "train.jsonl", valid_rows(12))
    settings = TuneopsSettings(project_dir=project)
    settings.state_home.mkdir(parents=True)
    log = RequestLog.open(str(settings.state_db_url))
    messages = [{"role": "user", "content": "Claim: my van was dented, mail jo@example.com"}]
    with log.engine.begin() as conn:
        insert_records(
            conn,
            [
                RequestRecord(
                    request_id=rid,
                    model="claims",
                    at=datetime.now(UTC) - timedelta(hours=1),
                    status_code=200,
                    latency_ms=9.0,
                    version="1",
                    prompt_text=json.dumps(messages),
                    response_text=f"Decision: APPROVE\nReason: dent {rid}.\nNext step: pay.",
                    format_ok=True,
                )
                for rid in ("r-1", "r-2")
            ],
        )
    log.add_feedback("r-1", 1.0)
    log.add_feedback("r-2", 0.1)  # below min_feedback: never harvested
    log.close()

    with running_chat_stub(StubConfig(answer=teacher, models=("teacher",))) as stub:
        (project / "tuneops.yaml").write_text(
            "model: {name: claims, base_model: tuneops-tiny}\n"
            "data:\n  train: data\n"
            f"  synthesize: {{teacher_base_url: '{stub.base_url}', teacher_model: teacher}}\n"
        )
        spec, _ = load_spec(project / "tuneops.yaml")

        @flow
        def fill_queues() -> tuple:
            return synthesize_examples(spec, settings, count=3, seeds=2), harvest_served_requests(
                spec, settings
            )

        synthesized, harvested = fill_queues()
    assert (synthesized.queued, harvested.queued, harvested.low_feedback) == (3, 1, 1)

    synthetic = ReviewQueue.named(settings.state_home, "synthetic")
    first, second, third = (i.item_id for i in synthetic.items())
    synthetic.decide(first, "accept", "ann")
    synthetic.decide(second, "reject", "ann")
    ReviewQueue.named(settings.state_home, "harvest").decide("req-r-1", "accept", "bob")

    @flow
    def export_and_version() -> tuple:
        files = export_accepted(spec, settings, "synthetic"), export_accepted(spec, settings, "harvest")
        return files, version_dataset(spec, settings)

    files, version = export_and_version()
    assert files == (project / "data/reviewed/synthetic.jsonl", project / "data/reviewed/harvest.jsonl")
    assert version.created and version.manifest["rows"] == 12 + 2
    summary = version.manifest["provenance"]
    assert summary["by_origin"] == {"harvest": 1, "synthetic": 1} and summary["request_ids"] == ["r-1"]
    assert summary["reviewers"] == ["ann", "bob"] and summary["teacher_models"] == ["teacher"]
    _, again = export_and_version()
    assert not again.created and again.digest == version.digest
    synthetic.decide(third, "accept", "ann")  # accepted later: the next version has it
    _, later = export_and_version()
    assert later.created and later.manifest["provenance"]["by_origin"] == {"harvest": 1, "synthetic": 2}
