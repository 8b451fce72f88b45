"""``tuneops promote / lineage / ledger / registry reconcile`` as a user runs them."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli

# The registry tests' fixtures (real MLflow store, chat endpoint, realistic versions), reused here.
_spec = importlib.util.spec_from_file_location(
    "registry_test_fixtures", Path(__file__).parents[1] / "registry" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_fixtures = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _fixtures
_spec.loader.exec_module(_fixtures)
chat_stub, store, build_version = _fixtures.chat_stub, _fixtures.store, _fixtures.build_version

M = "support-bot"


@pytest.fixture
def project(tmp_path: Path, mlflow_store: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder whose settings point at the test's MLflow store and a fresh state DB."""
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "train.jsonl").write_text("")
    (folder / "tuneops.yaml").write_text(
        f"model:\n  name: {M}\n  base_model: tiny-gpt2\ndata:\n  train: train.jsonl\n"
    )
    monkeypatch.setenv("TUNEOPS_TRACKING_URI", mlflow_store.tracking_uri)
    monkeypatch.setenv("TUNEOPS_ARTIFACT_ROOT", mlflow_store.artifact_root)
    monkeypatch.setenv("TUNEOPS_STATE_DB_URL", f"sqlite:///{folder / '.tuneops' / 'state.db'}")
    monkeypatch.chdir(folder)
    return folder


def run(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    return run_cli(args, capsys, monkeypatch)


def test_promote_then_lineage_json(
    project: Path, build_version: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    built = build_version()
    code, out, _ = run(
        ["promote", M, "1", "--alias", "challenger", "--reason", "gate passed"], capsys, monkeypatch
    )
    assert code == 0 and f"{M}@challenger: (unset) -> 1" in out
    code, out, err = run(["lineage", f"{M}@challenger", "--json"], capsys, monkeypatch)
    assert code == 0, err
    data = json.loads(out)
    assert data["version"] == "1" and data["finetune"]["job_id"] == "ftjob-1"
    assert {s["split"]: s["sha256"] for s in data["dataset"]["splits"]} == {
        k: v["sha256"] for k, v in built.manifest["splits"].items()
    }
    assert data["dataset"]["digest"] == built.manifest["digest"] and data["dataset"]["manifest_found"]
    assert data["evaluation"]["metrics"]["candidate.f1"] == pytest.approx(0.81)
    assert data["ledger"][0]["reason"] == "gate passed"


def test_human_lineage_and_ledger(
    project: Path, build_version: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    build_version()
    monkeypatch.setenv("COLUMNS", "200")
    run(["promote", M, "1", "--alias", "champion", "--reason", "first"], capsys, monkeypatch)
    code, out, _ = run(["lineage", M], capsys, monkeypatch)
    assert code == 0 and "fine-tune job ftjob-1" in out and "gate: passed" in out
    code, out, _ = run(["ledger", M], capsys, monkeypatch)
    assert code == 0 and "champion" in out and "first" in out


def test_ui_moves_show_up_in_ledger_and_lineage(
    project: Path,
    build_version: Any,
    store: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build_version()
    _fixtures.mlflow_client(store).set_registered_model_alias(M, "champion", "1")
    code, out, _ = run(["registry", "reconcile"], capsys, monkeypatch)
    assert code == 0 and "(observed)" in out
    code, out, _ = run(["ledger", M, "--json"], capsys, monkeypatch)
    rows = json.loads(out)
    assert [(r["alias"], r["to_version"], r["actor"], r["source"]) for r in rows] == [
        ("champion", "1", "unknown (observed)", "reconcile")
    ]
    code, out, _ = run(["lineage", f"{M}@champion", "--json", "--at", rows[0]["at"]], capsys, monkeypatch)
    assert code == 0 and json.loads(out)["version"] == "1"


def test_refusals_are_one_line_without_traceback(
    project: Path, build_version: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    build_version(gate_passed=False)
    code, _, err = run(["promote", M, "1", "--alias", "champion", "--reason", "x"], capsys, monkeypatch)
    assert code == 1 and "--force" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["promote", M, "1", "--alias", "champion"], capsys, monkeypatch)
    assert code == 1 and "--reason" in err
    code, _, err = run(["lineage", "bad ref!"], capsys, monkeypatch)
    assert code == 2 and "NAME@ALIAS" in err
    code, _, err = run(["lineage", M, "--at", "yesterday"], capsys, monkeypatch)
    assert code == 2 and "ISO 8601" in err
    code, _, err = run(["lineage", f"{M}@champion"], capsys, monkeypatch)
    assert code == 1 and "is not set" in err
    code, _, err = run(
        ["promote", M, "1", "--alias", "champion", "--reason", "hotfix", "--force"], capsys, monkeypatch
    )
    assert code == 0


def test_webhook_receiver_needs_a_secret(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TUNEOPS_WEBHOOK_SECRET", raising=False)
    code, _, err = run(["registry", "webhook"], capsys, monkeypatch)
    assert code == 2 and "TUNEOPS_WEBHOOK_SECRET" in err


@pytest.mark.slow
def test_the_installed_command(project: Path, build_version: Any) -> None:
    """The console script itself, in a child process, as a user types it."""
    build_version()
    env = {**os.environ}
    cmd = [sys.executable, "-m", "tuneops.cli.main"]
    done = subprocess.run(
        [*cmd, "promote", M, "1", "--alias", "challenger", "--reason", "cli"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [*cmd, "lineage", f"{M}@challenger", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and json.loads(done.stdout)["finetune"]["job_id"] == "ftjob-1"


def test_lineage_of_a_request_and_of_the_routing_at_t(
    project: Path, build_version: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a gateway recorded during a 90/10 split (routing history, request log) read by the CLI."""
    from datetime import UTC, datetime, timedelta

    from tuneops.requestlog import RequestLog, RequestRecord, insert_records
    from tuneops.routing_state import RoutingState

    build_version(job_id="j1")
    build_version(job_id="j2", seed="v2")
    assert run(["promote", M, "1", "--alias", "champion", "--reason", "r"], capsys, monkeypatch)[0] == 0
    assert run(["promote", M, "2", "--alias", "challenger", "--reason", "r"], capsys, monkeypatch)[0] == 0
    url = os.environ["TUNEOPS_STATE_DB_URL"]
    routing, requests = RoutingState.open(url), RequestLog.open(url)
    t0 = datetime.now(UTC) + timedelta(minutes=1)
    routing.observe_aliases(M, "1", "2", actor="gateway", at=t0)
    routing.set_rollout(M, challenger_version="2", weight=1000, actor="rollout", at=t0 + timedelta(seconds=1))
    record = RequestRecord(
        request_id="req-42", model=M, at=t0 + timedelta(seconds=5), status_code=200, latency_ms=50.0,
        version="2", arm="challenger",
    )  # fmt: skip
    with requests.engine.begin() as conn:
        insert_records(conn, [record])
    routing.close()
    requests.close()

    code, out, err = run(["lineage", "--request", "req-42", "--json"], capsys, monkeypatch)
    assert code == 0, err
    data = json.loads(out)
    assert data["version"] == "2" and data["finetune"]["job_id"] == "j2"
    assert (data["request"]["arm"], data["request"]["weight"], data["request"]["share"]) == (
        "challenger",
        1000,
        0.1,
    )
    code, out, err = run(["lineage", "--request", "req-42"], capsys, monkeypatch)
    assert code == 0, err
    flat = _unwrapped(out)
    assert "answered by version 2 (arm challenger, share then 10%" in flat and "j2" in flat
    inside = (t0 + timedelta(seconds=3)).isoformat()
    code, out, err = run(["lineage", M, "--at", inside], capsys, monkeypatch)
    assert code == 0, err
    assert "version 1: 90%, version 2: 10%" in _unwrapped(out)
    code, out, _ = run(["lineage", M, "--at", inside, "--json"], capsys, monkeypatch)
    assert json.loads(out)["routing"]["shares"] == {"1": 0.9, "2": 0.1}

    code, _, err = run(["lineage", "--request", "req-missing"], capsys, monkeypatch)
    assert code != 0 and "not in the request log" in err and "Traceback" not in err
    code, _, err = run(["lineage", M, "--request", "req-42"], capsys, monkeypatch)
    assert code != 0 and "--request" in err
    code, _, err = run(["lineage"], capsys, monkeypatch)
    assert code != 0 and "--request" in err


def _unwrapped(text: str) -> str:
    """Rich's tree output as one line: guides dropped, wrapped lines joined."""
    return " ".join(text.translate(str.maketrans("", "", "│├└─")).split())
