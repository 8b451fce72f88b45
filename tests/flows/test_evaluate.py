"""The ``evaluate`` flow and ``tuneops eval`` under Prefect, against the chat stub and real MLflow.

The models are the chat stub's (a real HTTP server speaking OpenAI's chat protocol, reached with
the official SDK); the store is a fresh SQLite MLflow; Prefect is the session's test server.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tuneops.cli.main import main
from tuneops.testing.chat_stub import ChatStub, Messages, StubConfig, running_chat_stub

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

KEY = "sk-eval-flow-5b2f9c1d7e"
WORDS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
NUMBERS = [*WORDS.split(), "sixteen"]
ROWS = {f"Spell the number {n}.": f"The number {n} is spelled {w}." for n, w in enumerate(NUMBERS)}


def answer(model: str, messages: Messages) -> str:
    question = str(messages[-1]["content"])
    return ROWS.get(question, "?") if model == "ft:spell" else "I could not say."


@pytest.fixture
def stub() -> Iterator[ChatStub]:
    with running_chat_stub(StubConfig(answer=answer, api_key=KEY)) as s:
        yield s


def _chat(question: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": question},
                                    {"role": "assistant", "content": ROWS[question]}]})  # fmt: skip


@pytest.fixture
def project(tmp_path: Path, stub: ChatStub, mlflow_store: object, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "spelling"
    folder.mkdir()
    questions = list(ROWS)
    (folder / "train.jsonl").write_text("\n".join(_chat(q) for q in questions[:11]) + "\n")
    (folder / "test.jsonl").write_text("\n".join(_chat(q) for q in questions[11:]) + "\n")
    spec = {
        "model": {"name": "spelling", "base_model": "base-1"},
        "provider": {"kind": "local", "base_url": stub.base_url},
        "data": {"train": "train.jsonl", "test": "test.jsonl"},
        "evaluation": {
            "metrics": ["f1", "rouge", "format"],
            "gates": [{"metric": "f1", "threshold": 0.9, "min_absolute_change": 0.3}],
            "bootstrap_resamples": 200,
        },
    }
    (folder / "tuneops.yaml").write_text(yaml.safe_dump(spec))
    (folder / ".env").write_text(f"TUNEOPS_LOCAL_API_KEY={KEY}\n")
    monkeypatch.setenv("TUNEOPS_ARTIFACT_ROOT", mlflow_store.artifact_root)  # type: ignore[attr-defined]
    return folder


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Events emitted during the test, captured by Prefect's own asserting client."""
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker

    worker = EventsWorker.instance(AssertingEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)
    seen: list[object] = []
    yield seen
    worker.drain()


def emitted(name: str) -> list[object]:
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker

    EventsWorker.instance().drain()
    return [e for client in AssertingEventsClient.all for e in client.events if e.event == name]


def test_flow_passes_logs_to_mlflow_and_publishes_the_table(project: Path, stub: ChatStub) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from tuneops.flows.evaluate import evaluate

    result = evaluate(spec_path=str(project / "tuneops.yaml"), candidate_model="ft:spell")
    assert result.passed, result.decision.reasons
    assert stub.stats.models["ft:spell"] == 6 and stub.stats.models["base-1"] == 6
    run = MlflowClient().get_run(result.mlflow_run_id)
    assert run.data.metrics["candidate.f1"] == 1.0 and run.data.tags["tuneops.gate"] == "passed"

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["evaluation-spelling"]))
        )
    assert artifacts and "| f1 |" in str(artifacts[0].data)


def test_a_failed_gate_is_a_result_and_emits_the_event(
    project: Path, stub: ChatStub, events: list[object]
) -> None:
    from tuneops.flows.evaluate import evaluate

    result = evaluate(spec_path=str(project / "tuneops.yaml"), candidate_model="base-1")
    assert not result.passed
    assert "f1 0 fails threshold >= 0.9" in result.decision.reasons
    failed = emitted("tuneops.gate.failed")
    assert len(failed) == 1
    assert failed[0].resource.id == "tuneops.model.spelling"
    assert failed[0].payload["reasons"] == list(result.decision.reasons)
    assert KEY not in failed[0].model_dump_json()


def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["tuneops", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_cli_eval_on_a_dataset_version(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tuneops.settings import TuneopsSettings
    from tuneops.spec import load_spec
    from tuneops.tasks.data.catalog import store_for
    from tuneops.tasks.data.version import version_from_spec

    spec, _ = load_spec(project / "tuneops.yaml")
    settings = TuneopsSettings.load(project)
    version = version_from_spec(spec, store=store_for(settings), home=settings.state_home)
    assert version.split("test") is not None

    ref = f"spelling@{version.digest[:12]}"
    spec_path = str(project / "tuneops.yaml")
    code, out, err = cli(
        monkeypatch, capsys, "eval", "--spec", spec_path, "--candidate", "ft:spell", "--dataset", ref
    )
    assert code == 0, err
    assert "gate passed for ft:spell" in out and "MLflow run:" in out
    run = MlflowClient().search_runs(MlflowClient().get_experiment_by_name("spelling").experiment_id)[0]
    assert run.data.tags["tuneops.dataset_digest"] == version.digest


def test_cli_eval_exit_codes(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = str(project / "tuneops.yaml")
    code, out, _ = cli(monkeypatch, capsys, "eval", "--spec", spec, "--candidate", "base-1",
                       "--test-file", str(project / "test.jsonl"))  # fmt: skip
    assert code == 3 and "FAIL" in out and "gate failed for base-1" in out

    code, _, err = cli(monkeypatch, capsys, "eval", "--spec", spec, "--candidate", "x", "--dataset", "a@b",
                       "--test-file", "t.jsonl")  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "either --dataset" in err

    code, _, err = cli(monkeypatch, capsys, "eval", "--spec", spec, "--candidate", "x",
                       "--test-file", str(project / "missing.jsonl"))  # fmt: skip
    assert code == 2 and "missing.jsonl: no such test file" in err and "Traceback" not in err
