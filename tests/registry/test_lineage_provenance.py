"""The data flywheel end to end: requests written to the request log the way the gateway writes them
(``RequestLogWriter``), feedback, ``tuneops data harvest`` (the real CLI), a review in the real queue,
a dataset version of the spec's data folder, a registered model version: its lineage names the
production requests it learnt from, and only those."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tests.conftest import run_cli
from tuneops.registry.conventions import ModelRef
from tuneops.registry.ledger import Ledger
from tuneops.registry.lineage import build_lineage
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.promotion import promote
from tuneops.registry.register import register_model
from tuneops.registry.render import lineage_tree
from tuneops.registry.types import RegistrationRequest
from tuneops.requestlog import RequestLog, RequestLogWriter, RequestRecord
from tuneops.settings import TuneopsSettings
from tuneops.spec import load_spec
from tuneops.tasks.data.catalog import store_for
from tuneops.tasks.data.review import ReviewQueue
from tuneops.tasks.data.store import open_store
from tuneops.tasks.data.tracking import links_from_version
from tuneops.tasks.data.version import version_from_spec

from .conftest import ChatStub

SYSTEM = "You triage insurance claims in three lines."
SPEC = f"""model: {{name: claims, base_model: tuneops-tiny}}
data:
  train: data
  system_prompt: {{policy: keep, text: "{SYSTEM}"}}
  harvest: {{min_feedback: 0.8}}
"""


def served(rid: str, *, capture: bool = True, format_ok: bool = True) -> RequestRecord:
    messages = [{"role": "user", "content": f"Claim {rid}: hail hit my car, call 555-123-4567"}]
    return RequestRecord(
        request_id=rid,
        model="claims",
        at=datetime.now(UTC) - timedelta(minutes=5),
        status_code=200,
        latency_ms=20.0,
        version="1",
        arm="champion",
        prompt_text=json.dumps(messages) if capture else None,
        response_text=f"Decision: APPROVE\nReason: hail {rid}.\nNext step: mail jo@example.com"
        if capture
        else None,
        format_ok=format_ok,
    )


def test_harvest_review_version_lineage_names_the_source_request_ids(
    tmp_path: Path,
    store: RegistryStore,
    ledger: Ledger,
    chat_stub: ChatStub,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "tuneops.yaml").write_text(SPEC)
    rows = [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Claim {i}: a scratch on my door."},
                {"role": "assistant", "content": f"Decision: APPROVE\nReason: case {i}.\nNext step: pay."},
            ]
        }
        for i in range(12)
    ]
    (project / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(project)
    settings = TuneopsSettings(project_dir=project)
    settings.state_home.mkdir(parents=True, exist_ok=True)

    log = RequestLog.open(str(settings.state_db_url))
    records = [
        served("good-1"),
        served("good-2"),
        served("good-3"),
        served("no-capture", capture=False),
        served("bad-format", format_ok=False),
        served("low-feedback"),
    ]
    with RequestLogWriter(log, settings.state_home / "spool") as writer:
        for record in records:
            writer.submit(record)
        assert writer.flush(30)
    for rid, score in [("good-1", 1.0), ("good-2", 0.9), ("good-3", 0.85), ("no-capture", 1.0),
                       ("bad-format", 1.0), ("low-feedback", 0.3)]:  # fmt: skip
        log.add_feedback(rid, score)
    log.close()

    code, out, err = run_cli(["data", "harvest", "--spec", "tuneops.yaml"], capsys, monkeypatch)
    assert code == 0, out + err
    assert "1 without captured text" in out and "3 queued" in " ".join(out.split())
    queue = ReviewQueue.named(settings.state_home, "harvest")
    assert sorted(i.provenance["request_id"] for i in queue.items()) == ["good-1", "good-2", "good-3"]
    from tuneops.tasks.data.review import export_reviewed

    queue.decide("req-good-1", "accept", "ann")
    queue.decide("req-good-2", "accept", "ann")
    queue.decide("req-good-3", "reject", "ann")
    export_reviewed(queue, project / "data" / "reviewed" / "harvest.jsonl")

    spec, _ = load_spec(project / "tuneops.yaml")
    version = version_from_spec(spec, store=store_for(settings), home=settings.state_home)
    stored = "".join(Path(s.uri.removeprefix("file://")).read_text() for s in version.splits.values())
    assert "good-1" in stored and "good-2" in stored and "good-3" not in stored  # rejected: not data
    assert "555-123-4567" not in stored and "jo@example.com" not in stored and "[PHONE]" in stored
    assert version.manifest["provenance"]["by_origin"] == {"harvest": 2}

    request = RegistrationRequest(
        model_name="claims",
        provider="local",
        base_model="tuneops-tiny",
        endpoint_base_url=chat_stub.base_url,
        endpoint_model="ft:tuneops-tiny:job-1",
        job_id="job-1",
        datasets=links_from_version(version),
    )
    registered = register_model(request, store)
    promote(store, ledger, "claims", registered.version, "challenger", reason="test")

    def read_manifest(uri: str) -> dict[str, Any]:
        return dict(json.loads(open_store(uri).read_bytes("manifest.json")))

    lineage = build_lineage(
        store, ledger, ModelRef("claims", alias="challenger"), read_manifest=read_manifest
    )
    provenance = lineage.dataset.provenance
    assert provenance is not None and not [w for w in lineage.warnings if "dataset" in w]
    assert sorted(provenance["request_ids"]) == ["good-1", "good-2"] and provenance["request_ids_total"] == 2
    assert lineage.to_json_dict()["dataset"]["provenance"]["reviewers"] == ["ann"]
    console = Console(record=True, width=200)
    console.print(lineage_tree(lineage))
    text = console.export_text()
    assert "production requests (2):" in text and "good-1" in text and "good-2" in text
    assert "good-3" not in text and "no-capture" not in text
