"""``tuneops data review`` as a person uses it: keys on stdin of a real process, a hard kill in the
middle, a resume, then ``tuneops data version`` of the reviewed file.

The review commands run as ``python -m tuneops.cli.review`` (the same typer commands that
``register`` adds to ``tuneops data``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuneops.tasks.data.review import QueueItem, ReviewQueue, provenance_path

pytestmark = pytest.mark.slow
SYSTEM = "You triage insurance claims."


def example(i: int) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"claim number {i}"},
            {"role": "assistant", "content": f"answer {i}"},
        ]
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(example(100 + i)) + "\n" for i in range(12)))
    (tmp_path / "tuneops.yaml").write_text(
        "model: {name: claims, base_model: tuneops-tiny}\ndata:\n  train: train.jsonl\n"
    )
    queue = ReviewQueue.named(tmp_path / ".tuneops", "synthetic")
    queue.add(
        [
            QueueItem(
                f"syn-{i:02d}",
                example(i),
                {"origin": "synthetic", "teacher_model": "teacher", "prompt_template": "synthesize-v1"},
            )
            for i in range(14)
        ]
    )
    return tmp_path


def review(project: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tuneops.cli.review", "review", "--reviewer", "ann", "--spec", "tuneops.yaml"],
        cwd=project,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def wait_for(proc: subprocess.Popen[str], text: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if text in line:
            return
    pytest.fail(f"the review ended before printing {text!r}")


def test_accept_reject_edit_quit_crash_resume_then_version_holds_exactly_the_accepted_rows(
    project: Path,
) -> None:
    first = review(project)
    out, _ = first.communicate("a\na\nr\ne\nbetter answer\\nline two\na\nq\n", timeout=120)
    assert first.returncode == 0, out
    assert "edited and accepted" in out and "3 accepted, 1 edited, 1 rejected, 9 pending" in out

    second = review(project)  # killed hard after two decisions: both must survive
    assert second.stdin is not None
    second.stdin.write("a\n")
    second.stdin.flush()
    wait_for(second, "accepted")
    second.stdin.write("a\n")
    second.stdin.flush()
    wait_for(second, "accepted")
    second.kill()
    second.wait(30)
    queue = ReviewQueue.named(project / ".tuneops", "synthetic")
    assert queue.counts() == {"accept": 5, "reject": 1, "edit": 1, "pending": 7}

    third = review(project)  # resumes at syn-07
    out, _ = third.communicate("a\na\na\na\na\na\nr\n", timeout=120)
    assert third.returncode == 0, out
    assert "1/7  syn-07" in out and "11 accepted, 1 edited, 2 rejected, 0 pending" in out

    reviewed = project / "data" / "reviewed" / "synthetic.jsonl"
    rows = [json.loads(x) for x in reviewed.read_text().splitlines()]
    accepted = [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert [r["messages"][1]["content"] for r in rows] == [f"claim number {i}" for i in accepted]
    assert rows[2]["messages"][2]["content"] == "better answer\nline two"
    prov = [json.loads(x) for x in provenance_path(reviewed).read_text().splitlines()]
    assert {(p["origin"], p["teacher_model"], p["prompt_template"], p["reviewer"]) for p in prov} == {
        ("synthetic", "teacher", "synthesize-v1", "ann")
    }
    assert [p["decision"] for p in prov].count("edit") == 1 and all(p["decided_at"] for p in prov)

    version = subprocess.run(
        [
            "tuneops",
            "data",
            "version",
            str(reviewed),
            "--name",
            "reviewed",
            "--json",
            "--spec",
            "tuneops.yaml",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert version.returncode == 0, version.stdout + version.stderr
    manifest = json.loads(version.stdout)
    stored = Path(manifest["uri"].removeprefix("file://")) if "uri" in manifest else None
    versioned = []
    for split in ("train", "validation", "test"):
        path = stored / f"{split}.jsonl" if stored else None
        if path is not None and path.is_file():
            versioned += [json.loads(x) for x in path.read_text().splitlines()]
    assert sorted(json.dumps(r, sort_keys=True) for r in versioned) == sorted(
        json.dumps(r, sort_keys=True) for r in rows
    )
    summary = manifest["manifest"]["provenance"]  # per-row provenance made it into the version
    assert (summary["rows"], summary["by_origin"], summary["edited"]) == (12, {"synthetic": 12}, 1)
    assert summary["teacher_models"] == ["teacher"] and summary["reviewers"] == ["ann"]
    assert (stored / summary["file"]).is_file() and len(
        (stored / summary["file"]).read_text().splitlines()
    ) == 12


def test_synthesize_seeds_from_a_data_folder_and_queues_candidates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import run_cli
    from tuneops.testing.chat_stub import StubConfig, running_chat_stub

    topics = ["my bicycle was stolen", "a burst pipe flooded the kitchen", "hail dented the car roof"]

    def teacher(model: str, messages: list) -> str:
        return "\n".join(json.dumps({"user": t, "assistant": f"Noted: {t}."}) for t in topics)

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text("".join(json.dumps(example(i)) + "\n" for i in range(12)))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.jsonl").write_text("")
    monkeypatch.chdir(tmp_path)
    with running_chat_stub(StubConfig(answer=teacher, models=("teacher",))) as stub:
        for train, expected in (("data", "3 queued"), ("empty", "no seed examples")):
            (tmp_path / "tuneops.yaml").write_text(
                f"model: {{name: claims, base_model: tuneops-tiny}}\ndata:\n  train: {train}\n"
                f"  synthesize: {{teacher_base_url: '{stub.base_url}', teacher_model: teacher}}\n"
            )
            code, out, err = run_cli(["data", "synthesize", "-n", "3", "--seeds", "2"], capsys, monkeypatch)
            assert expected in " ".join((out + err).split()), out + err
            assert (code == 0) == (train == "data") and "Traceback" not in out + err
    items = ReviewQueue.named(tmp_path / ".tuneops", "synthetic").items()
    assert [i.example["messages"][1]["content"] for i in items] == topics
    assert items[0].example["messages"][0] == {"role": "system", "content": SYSTEM}
