"""The SQLite store: what the API returns survives closing and reopening the database."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneops.errors import StoreError
from tuneops.serving.local.store import CheckpointRecord, FileRecord, ServiceStore


def test_state_survives_reopening(tmp_path: Path) -> None:
    store = ServiceStore(tmp_path / "service.db")
    store.add_file(FileRecord("file-1", 1, "train.jsonl", "fine-tune", 10, str(tmp_path / "f")))
    store.add_job({"id": "ftjob-1", "status": "queued", "metadata": {"a": "b"}}, {"resumes": 0})
    store.add_job({"id": "ftjob-2", "status": "running"}, {})
    store.add_event("ev-1", "ftjob-1", "first")
    store.add_event("ev-2", "ftjob-1", "second", type="metrics", data={"step": 1})
    store.add_checkpoint(
        CheckpointRecord("ck-1", "ftjob-1", 2, 10, 1, "ft:m:o:s:1:ckpt-step-10", {"step": 10.0}, "p1")
    )
    store.add_checkpoint(
        CheckpointRecord("ck-2", "ftjob-1", 3, 20, 2, "ft:m:o:s:1:ckpt-step-20", {"step": 20.0}, "p2")
    )
    store.close()

    again = ServiceStore(tmp_path / "service.db")
    assert again.get_file("file-1") == FileRecord(
        "file-1", 1, "train.jsonl", "fine-tune", 10, str(tmp_path / "f")
    )
    assert [j["id"] for j in again.list_jobs()] == ["ftjob-2", "ftjob-1"]  # newest first
    assert again.job_ids_with_status(["queued", "running"]) == ["ftjob-1", "ftjob-2"]  # oldest first
    assert [e["message"] for e in again.list_events("ftjob-1")] == ["second", "first"]
    assert again.list_events("ftjob-1")[0]["data"] == {"step": 1}
    assert [c.step for c in again.list_checkpoints("ftjob-1")] == [20, 10]
    found = again.checkpoint_by_model("ft:m:o:s:1:ckpt-step-10")
    assert found is not None and found.path == "p1"
    assert again.checkpoint_by_model("nope") is None


def test_update_job_changes_fields_and_internal(tmp_path: Path) -> None:
    store = ServiceStore(tmp_path / "s.db")
    store.add_job({"id": "j", "status": "queued", "error": None}, {"resumes": 0})
    body = store.update_job("j", status="failed", error={"code": "x"})
    assert body["status"] == "failed"
    assert store.get_job("j") == ({"id": "j", "status": "failed", "error": {"code": "x"}}, {"resumes": 0})
    store.update_job("j", internal={"resumes": 2})
    assert store.get_job("j")[1] == {"resumes": 2}
    assert store.job_ids_with_status(["failed"]) == ["j"]
    with pytest.raises(StoreError):
        store.update_job("missing", status="x")


def test_delete_file(tmp_path: Path) -> None:
    store = ServiceStore(tmp_path / "s.db")
    store.add_file(FileRecord("file-1", 1, "a", "fine-tune", 1, "p"))
    assert store.delete_file("file-1") and not store.delete_file("file-1")
    assert store.get_file("file-1") is None and store.list_files() == []


def test_unopenable_database_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError):
        ServiceStore(tmp_path / "dir.db")
