"""``tuneops traffic replay`` as a user runs it: a chat file (or the spec's split) through the gateway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import run_cli
from tests.flows.test_rollout_gateway import MODEL, ROWS, live_project
from tuneops.routing_state import RoutingState
from tuneops.serving.local.testing import as_jsonl


def run(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    return run_cli(args, capsys, monkeypatch)


@pytest.mark.slow
def test_replay_sends_sticky_users_through_the_gateway_bounded_by_count(
    tmp_path: Path, mlflow_store: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    chats = tmp_path / "my-logs.jsonl"
    chats.write_bytes(as_jsonl(ROWS[:10]))
    with live_project(tmp_path, mlflow_store, monkeypatch, strategy="canary", challenger={}) as live:
        routing = RoutingState.open(live.state_url)
        routing.set_rollout(
            MODEL, challenger_version="2", weight=5000, experiment_id="replay-test", actor="test"
        )
        routing.close()
        httpx.post(f"{live.gateway_url}/routing/refresh").raise_for_status()  # the 50% split is live now
        args = ["traffic", "replay", str(chats), "--spec", str(live.spec), "--gateway-url",
                live.gateway_url, "--rate", "200", "--users", "12", "--requests", "60", "--duration", "60",
                "--json"]  # fmt: skip
        code, out, err = run(args, capsys, monkeypatch)
        assert code == 0, err
        report = json.loads(out)
        assert report["sent"] == 60 and report["answered"] == 60 and report["failed"] == 0
        assert set(report["arms"]) == {"champion", "challenger"}  # both arms served at 50%
        rows = [r for r in live.rows() if r.role == "answer"]
    assert len(rows) == 60
    arms: dict[str, set[str]] = {}
    for r in rows:
        arms.setdefault(r.user_key_hash or "", set()).add(r.arm)
    assert len(arms) <= 12 and all(len(a) == 1 for a in arms.values())  # every user kept one arm
    prompts = {json.loads(r.prompt_text)[-1]["content"] for r in rows if r.prompt_text}
    assert prompts <= {row["messages"][1]["content"] for row in ROWS[:10]}


@pytest.mark.slow
def test_replay_of_the_held_out_split_stops_at_its_duration(
    tmp_path: Path, mlflow_store: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with live_project(tmp_path, mlflow_store, monkeypatch, strategy="canary", challenger={}) as live:
        (live.spec.parent / "test.jsonl").write_bytes(as_jsonl(ROWS[20:30]))
        text = live.spec.read_text().replace("{train: train.jsonl}", "{train: train.jsonl, test: test.jsonl}")
        live.spec.write_text(text)
        args = ["traffic", "replay", "--split", "test", "--spec", str(live.spec), "--gateway-url",
                live.gateway_url, "--rate", "20", "--duration", "1", "--json"]  # fmt: skip
        code, out, err = run(args, capsys, monkeypatch)
        assert code == 0, err
        report = json.loads(out)
        assert 1 <= report["sent"] <= 21 and report["failed"] == 0  # 20/s for 1 s, then it stops
        assert report["versions"] == {"1": report["answered"]}  # weight 0: the champion answers all


def test_clear_errors_for_what_cannot_be_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["traffic", "replay", "--model", "m"], capsys, monkeypatch)
    assert code != 0 and "give a chat FILE or --split SPLIT" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    code, _, err = run(["traffic", "replay", str(bad), "--model", "m", "--spec", str(tmp_path / "none.yaml")],
                       capsys, monkeypatch)  # fmt: skip
    assert code != 0 and "bad.jsonl:2: not a chat row" in err
    code, _, err = run(["traffic", "replay", str(tmp_path / "missing.jsonl"), "--model", "m", "--spec",
                        str(tmp_path / "none.yaml")], capsys, monkeypatch)  # fmt: skip
    assert code != 0 and "no such chat file" in err
    code, _, err = run(["traffic", "replay", str(bad), "--model", "m", "--rate", "0"], capsys, monkeypatch)
    assert code != 0 and "must be positive" in err


def test_help_names_the_bounds(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(["traffic", "replay", "--help"], capsys, monkeypatch)
    assert code == 0 and all(o in out for o in ("--rate", "--users", "--duration", "--requests", "--split"))
