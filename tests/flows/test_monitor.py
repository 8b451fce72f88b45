"""``monitor-drift`` against real local stores: a champion registered on a versioned dataset, its
served traffic written to the request log, the verdict, the MLflow report and the event decision.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tuneops import events
from tuneops.requestlog import RequestLog, RequestRecord, insert_records
from tuneops.serving.local.testing import as_jsonl, claims_chat_examples
from tuneops.settings import TuneopsSettings
from tuneops.spec import load_spec

MODEL = "claims-monitor"
TRAVEL = [
    "I booked a flight from {a} to {b} on {d} and my seat was cancelled. Can I get a refund?",
    "Which hotels in {b} include breakfast and free cancellation for a {d} arrival?",
    "Our train from {a} to {b} was delayed {n} hours and we missed the ferry. What are my options?",
]
CITIES = ["Lisbon", "Oslo", "Chicago", "Osaka", "Lima", "Prague", "Madrid", "Quito"]


def _travel(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        rng.choice(TRAVEL).format(
            a=rng.choice(CITIES),
            b=rng.choice(CITIES),
            d=rng.choice(["Monday", "Sunday"]),
            n=rng.randint(2, 9),
        )
        for _ in range(n)
    ]


def _claims(n: int, seed: int) -> list[str]:
    return [str(row["messages"][1]["content"]) for row in claims_chat_examples(n, seed=seed)]


@pytest.fixture
def champion_project(tmp_path: Path, settings: TuneopsSettings) -> tuple[Path, TuneopsSettings, str]:
    """A project whose model has a champion trained (by lineage) on a versioned claims dataset."""
    from tuneops.registry.ledger import Ledger
    from tuneops.registry.mlflow_store import RegistryStore
    from tuneops.registry.promotion import promote
    from tuneops.registry.register import register_model
    from tuneops.registry.types import RegistrationRequest
    from tuneops.tasks.data.catalog import store_for
    from tuneops.tasks.data.tracking import links_from_version
    from tuneops.tasks.data.version import version_from_spec

    project = settings.project_dir
    project.mkdir(parents=True, exist_ok=True)
    (project / "train.jsonl").write_bytes(as_jsonl(claims_chat_examples(600, seed=1)))
    spec_path = project / "tuneops.yaml"
    spec_path.write_text(
        f"model: {{name: {MODEL}, base_model: tuneops-tiny}}\n"
        "data: {name: claims, train: train.jsonl}\n"
        "monitoring: {min_requests: 200, embedding_sample: 300}\n",
        encoding="utf-8",
    )
    (project / ".env").write_text(
        f"TUNEOPS_TRACKING_URI={settings.tracking_uri}\nTUNEOPS_ARTIFACT_ROOT={settings.artifact_root}\n",
        encoding="utf-8",
    )
    spec, _ = load_spec(spec_path)
    dataset = version_from_spec(spec, store=store_for(settings), home=settings.state_home)
    store = RegistryStore.from_settings(settings)
    version = register_model(
        RegistrationRequest(
            model_name=MODEL,
            provider="local",
            base_model="tuneops-tiny",
            endpoint_base_url="http://127.0.0.1:1/v1",
            endpoint_model="ft:tuneops-tiny:monitor",
            job_id="ftjob-monitor",
            datasets=links_from_version(dataset),
            gate_passed=True,
        ),
        store,
    )
    promote(
        store, Ledger.open(settings.state_db_url or ""), MODEL, version.version, "champion", reason="test"
    )
    return spec_path, settings, version.version


def _serve(settings: TuneopsSettings, version: str, prompts: list[str], *, capture: bool = True) -> None:
    now = datetime.now(UTC)
    records = [
        RequestRecord(
            request_id=uuid.uuid4().hex,
            model=MODEL,
            at=now - timedelta(minutes=1 + i % 600),
            status_code=200,
            latency_ms=50.0 + i % 20,
            version=version,
            arm="champion",
            prompt_text=json.dumps([{"role": "user", "content": p}]) if capture else None,
            prompt_chars=len(p),
            prompt_tokens=len(p) // 4,
        )
        for i, p in enumerate(prompts)
    ]
    log = RequestLog.open(settings.state_db_url or "")
    with log.engine.begin() as conn:
        insert_records(conn, records)
    log.close()


def _monitor(spec_path: Path, settings: TuneopsSettings, monkeypatch: pytest.MonkeyPatch):
    from tuneops.flows.monitor import monitor_drift

    monkeypatch.setenv("TUNEOPS_TRACKING_URI", settings.tracking_uri or "")
    monkeypatch.setenv("TUNEOPS_ARTIFACT_ROOT", settings.artifact_root or "")
    return monitor_drift(spec_path=str(spec_path), emit=False)


@pytest.mark.slow
def test_normal_traffic_is_no_drift_and_emits_nothing(champion_project, prefect_harness, monkeypatch):
    spec_path, settings, version = champion_project
    _serve(settings, version, _claims(400, seed=2))
    outcome = _monitor(spec_path, settings, monkeypatch)
    verdict = outcome.check.verdict
    assert verdict.status == "no_drift", verdict.summary()
    assert verdict.version == version and verdict.requests == 400
    assert not outcome.emitted
    measured = {s.name for s in verdict.signals if s.measured}
    assert {"embedding_auc", "prompt_length_psi", "ood_share"} <= measured
    assert outcome.check.champion["dataset"].startswith("claims@")


@pytest.mark.slow
def test_traffic_on_another_topic_drifts_and_the_report_lands_in_mlflow(
    champion_project, prefect_harness, monkeypatch
):
    from tuneops.registry.mlflow_store import RegistryStore
    from tuneops.tasks.drift.tasks import drift_event_summary

    spec_path, settings, version = champion_project
    _serve(settings, version, _claims(280, seed=3) + _travel(120, seed=4))
    outcome = _monitor(spec_path, settings, monkeypatch)
    verdict = outcome.check.verdict
    assert verdict.drifted
    assert "embedding_auc" in {s.name for s in verdict.drifted_signals}
    run = RegistryStore.from_settings(settings).get_run(outcome.report_run_id)
    assert run.tags["tuneops.kind"] == "drift" and run.tags["tuneops.drift.status"] == "drifted"
    assert run.metrics["drift.drifted"] == 1.0
    artifacts = Path(settings.artifact_root.removeprefix("file://"))
    assert any(artifacts.rglob("drift/signals.png")) and any(artifacts.rglob("drift/report.md"))
    assert outcome.flow_run_id and run.tags["tuneops.flow_run_id"] == outcome.flow_run_id
    summary = drift_event_summary(outcome.check, outcome.report_run_id, outcome.flow_run_id)
    assert summary.startswith(verdict.summary()) and outcome.report_run_id in summary
    assert events.drift_references(f"drift: {summary}") == (outcome.report_run_id, outcome.flow_run_id)


@pytest.mark.slow
def test_too_little_traffic_says_so_and_emits_nothing(champion_project, prefect_harness, monkeypatch):
    spec_path, settings, version = champion_project
    _serve(settings, version, _travel(50, seed=5))
    outcome = _monitor(spec_path, settings, monkeypatch)
    assert outcome.check.verdict.status == "insufficient_traffic"
    assert outcome.check.verdict.summary() == "insufficient traffic: 50 requests in the window, 200 needed"
    assert not outcome.emitted


@pytest.mark.slow
def test_without_captured_texts_lengths_are_compared_with_the_reference_window(
    champion_project, prefect_harness, monkeypatch
):
    spec_path, settings, version = champion_project
    _serve(settings, version, _claims(300, seed=6), capture=False)
    outcome = _monitor(spec_path, settings, monkeypatch)
    verdict = outcome.check.verdict
    assert verdict.status == "no_drift"
    by_name = {s.name: s for s in verdict.signals}
    assert not by_name["embedding_auc"].measured
    assert any("not captured" in n for n in outcome.check.notes)


FORMAT_REGEX = r"^CLAIM_TYPE=\w+; PRIORITY=(low|medium|high); NEXT=\w+\.$"
OFF_FORMAT = "Sorry to hear that! Please call our hotline and someone will look into your claim."


def _serve_answers(settings: TuneopsSettings, version: str, rows: list[tuple[str, str]]) -> None:
    """Served answers as the gateway records them: through the request log's writer, texts captured."""
    from tuneops.requestlog import RequestLogWriter

    now = datetime.now(UTC)
    log = RequestLog.open(settings.state_db_url or "")
    with RequestLogWriter(log, settings.state_home / "spool-quality") as writer:
        for i, (prompt, answer) in enumerate(rows):
            writer.submit(
                RequestRecord(
                    request_id=uuid.uuid4().hex,
                    model=MODEL,
                    at=now - timedelta(minutes=1 + i % 600),
                    status_code=200,
                    latency_ms=50.0 + i % 20,
                    version=version,
                    arm="champion",
                    prompt_text=json.dumps([{"role": "user", "content": prompt}]),
                    response_text=answer,
                    prompt_chars=len(prompt),
                    response_chars=len(answer),
                )
            )
        assert writer.flush(timeout=30)
    log.close()


@pytest.mark.slow
@pytest.mark.parametrize(("answers", "sample"), [("good", 0.25), ("off-format", 0.25), ("good", 0.03)])
def test_sampled_answers_are_scored_against_the_format_gate(
    champion_project, prefect_harness, monkeypatch, answers: str, sample: float
):
    from tuneops.registry.mlflow_store import RegistryStore

    spec_path, settings, version = champion_project
    spec_path.write_text(
        spec_path.read_text(encoding="utf-8").replace(
            "monitoring: {", f"monitoring: {{quality_sample: {sample}, quality_min_rows: 30, "
        )
        + f"evaluation:\n  format: {{regex: '{FORMAT_REGEX}'}}\n"
        "  gates: [{metric: format, threshold: 0.9}]\n",
        encoding="utf-8",
    )
    rows = [
        (str(r["messages"][1]["content"]), str(r["messages"][2]["content"]))
        for r in claims_chat_examples(400, seed=2)
    ]
    if answers == "off-format":  # every other answer breaks the format the gate asks for
        rows = [(p, OFF_FORMAT if i % 2 else a) for i, (p, a) in enumerate(rows)]
    _serve_answers(settings, version, rows)

    outcome = _monitor(spec_path, settings, monkeypatch)
    verdict = outcome.check.verdict
    quality = {s.name: s for s in verdict.signals if s.name.startswith("quality:")}
    run = RegistryStore.from_settings(settings).get_run(outcome.report_run_id)
    report = next(Path(settings.artifact_root.removeprefix("file://")).rglob("drift/report.md")).read_text()
    if sample < 0.1:  # ~12 of 400 sampled: too few to judge, and the summary says so
        assert verdict.status == "no_drift" and list(quality) == ["quality:sample"]
        assert "quality:sample not judged:" in verdict.summary() and "30 needed" in verdict.summary()
        return
    signal = quality["quality:format"]
    assert signal.measured and signal.threshold == 0.9
    if answers == "good":
        assert verdict.status == "no_drift", verdict.summary()
        assert signal.observed == 1.0 and not signal.drifted
    else:
        assert [s.name for s in verdict.drifted_signals] == ["quality:format"], verdict.summary()
        assert 0.3 < signal.observed < 0.7 and signal.effect == pytest.approx(signal.observed - 0.9)
        assert "below the gate's 0.9" in verdict.summary()
    assert run.metrics["drift.quality.format"] == signal.observed
    assert "Sampled quality scores" in report and signal.message in report
