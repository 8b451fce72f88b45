"""``tuneops rollout`` as a user types it: help, status, abort, approve/reject, and clear errors.

Approving a rollout that is really paused (a flow run waiting in Prefect) is tested end to end in
``tests/flows/test_rollout_approval.py``; here the CLI's own answers on the state database.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli
from tuneops.tasks.rollout.state import RolloutStore

MODEL = "claims-bot"


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TUNEOPS_STATE_DB_URL", f"sqlite:///{tmp_path / 'state.db'}")
    (tmp_path / "train.jsonl").write_text("")
    path = tmp_path / "tuneops.yaml"
    path.write_text(f"model: {{name: {MODEL}, base_model: tuneops-tiny}}\ndata: {{train: train.jsonl}}\n")
    return path


def run(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    code, out, err = run_cli(args, capsys, monkeypatch)
    return code, out + err


def store() -> RolloutStore:
    import os

    return RolloutStore.open(os.environ["TUNEOPS_STATE_DB_URL"])


def test_help_lists_every_subcommand(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = run(["rollout", "--help"], capsys, monkeypatch)
    assert code == 0 and all(c in out for c in ("start", "status", "abort", "approve", "reject"))
    code, out = run(["rollout", "approve", "--help"], capsys, monkeypatch)
    assert code == 0 and "--reason" in out


def test_status_of_a_model_never_rolled_out_is_a_clear_error(
    spec: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = run(["rollout", "status", "no-such-model", "--spec", str(spec)], capsys, monkeypatch)
    assert code == 1 and "no-such-model has never been rolled out" in out


def test_status_prints_the_step_table(
    spec: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = store()
    record, _ = s.begin(MODEL, "2", "1", "canary", flow_run_id=None)
    s.append_step(record.id, step_index=0, step_name="5%", weight=500, action="wait", challenger_requests=3,
                  champion_requests=60, summary="wait: step traffic 3 challenger")  # fmt: skip
    s.close()
    code, out = run(["rollout", "status", MODEL, "--spec", str(spec)], capsys, monkeypatch)
    assert code == 0
    assert f"Rollout {record.id}: {MODEL} v2 (canary)" in out and "running" in out
    assert "| 5% | 5% | wait | 3 | 60 |" in out.replace("  ", " ")


def test_abort_asks_the_running_rollout_to_stop_and_errors_when_none_runs(
    spec: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = run(["rollout", "abort", MODEL, "--spec", str(spec)], capsys, monkeypatch)
    assert code == 1 and f"{MODEL} has no running rollout" in out
    s = store()
    record, _ = s.begin(MODEL, "2", "1", "canary", flow_run_id=None)
    code, out = run(
        ["rollout", "abort", MODEL, "--spec", str(spec), "--reason", "pager"], capsys, monkeypatch
    )
    assert code == 0 and f"rollout {record.id} will stop at its next interval: pager" in out
    assert s.get(record.id).abort_requested == "pager"
    s.close()


def test_approve_and_reject_need_a_reason_and_a_paused_rollout(
    spec: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = run(["rollout", "approve", MODEL, "--spec", str(spec), "--reason", " "], capsys, monkeypatch)
    assert code == 1 and "needs a reason" in out
    code, out = run(["rollout", "approve", MODEL, "--spec", str(spec)], capsys, monkeypatch)
    assert code == 2 and "--reason" in out  # a usage error: the option is required
    code, out = run(
        ["rollout", "reject", "other-model", "--spec", str(spec), "--reason", "no"], capsys, monkeypatch
    )
    assert code == 1 and "other-model has no rollout waiting for approval" in out
    s = store()
    s.begin(MODEL, "2", "1", "canary", flow_run_id=None)  # running, not paused
    s.close()
    code, out = run(["rollout", "approve", MODEL, "--spec", str(spec), "--reason", "ok"], capsys, monkeypatch)
    assert code == 1 and f"{MODEL} has no rollout waiting for approval" in out


def test_start_refuses_a_model_the_spec_does_not_describe(
    spec: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = run(["rollout", "start", "unknown-model", "--spec", str(spec)], capsys, monkeypatch)
    assert code == 1 and f"describes {MODEL}, not unknown-model" in out
