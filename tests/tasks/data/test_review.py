"""The review queue: durable decisions, resume, several reviewers at once, torn lines, export."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from tuneops.tasks.data.review import QueueItem, ReviewQueue, export_reviewed, provenance_path, row_sha256


def example(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}


def filled(tmp_path: Path, n: int = 6) -> ReviewQueue:
    queue = ReviewQueue(tmp_path / "queue")
    items = [
        QueueItem(f"item-{i}", example(i), {"origin": "synthetic", "teacher_model": "t"}) for i in range(n)
    ]
    assert queue.add(items) == n
    assert queue.add(items) == 0  # re-adding queues nothing twice
    return queue


def test_decisions_are_durable_and_a_new_queue_object_resumes_at_the_first_pending(tmp_path: Path) -> None:
    queue = filled(tmp_path)
    queue.decide("item-0", "accept", "ann")
    queue.decide("item-1", "reject", "ann")
    edited = example(99)
    queue.decide("item-2", "edit", "ann", edited)
    again = ReviewQueue(tmp_path / "queue")  # what a restarted process sees
    assert [i.item_id for i in again.pending()] == ["item-3", "item-4", "item-5"]
    assert again.counts() == {"accept": 1, "reject": 1, "edit": 1, "pending": 3}
    assert again.decisions()["item-2"].example == edited


def test_the_first_decision_stands_and_is_returned_to_a_second_reviewer(tmp_path: Path) -> None:
    queue = filled(tmp_path)
    first = queue.decide("item-0", "accept", "ann")
    second = queue.decide("item-0", "reject", "bob")
    assert second == first and second.reviewer == "ann"
    assert len((tmp_path / "queue" / "decisions.jsonl").read_text().splitlines()) == 1


def test_bad_decisions_are_refused(tmp_path: Path) -> None:
    queue = filled(tmp_path)
    with pytest.raises(ValueError, match="decision must be"):
        queue.decide("item-0", "maybe", "ann")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="edit carries"):
        queue.decide("item-0", "edit", "ann")
    with pytest.raises(ValueError, match="no item"):
        queue.decide("nope", "accept", "ann")


def _reviewer(folder: str, name: str) -> None:
    queue = ReviewQueue(Path(folder))
    for item in queue.items():  # everyone tries every item: only one decision may stand per item
        queue.decide(item.item_id, "accept", name)


def test_several_reviewers_at_once_lose_no_decision_and_decide_nothing_twice(tmp_path: Path) -> None:
    queue = filled(tmp_path, n=60)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_reviewer, args=(str(queue.folder), f"r{k}")) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    lines = [json.loads(x) for x in queue.decisions_path.read_text().splitlines()]
    assert sorted(x["item_id"] for x in lines) == sorted(f"item-{i}" for i in range(60))
    assert queue.counts()["pending"] == 0


def test_a_torn_last_line_from_a_crash_hides_nothing_before_it_and_is_not_glued_to_the_next(
    tmp_path: Path,
) -> None:
    queue = filled(tmp_path)
    queue.decide("item-0", "accept", "ann")
    with queue.decisions_path.open("ab") as handle:
        handle.write(b'{"item_id": "item-1", "decis')  # the process died mid-write
    assert next(i.item_id for i in queue.pending()) == "item-1"
    queue.decide("item-1", "reject", "ann")
    assert queue.decisions()["item-1"].decision == "reject"
    assert queue.decisions()["item-0"].decision == "accept"


def test_export_writes_accepted_and_edited_rows_with_provenance(tmp_path: Path) -> None:
    queue = filled(tmp_path)
    queue.decide("item-0", "accept", "ann")
    queue.decide("item-1", "reject", "ann")
    queue.decide(
        "item-2",
        "edit",
        "bob",
        {**example(2), "messages": [*example(2)["messages"][:1], {"role": "assistant", "content": "better"}]},
    )
    target = tmp_path / "data" / "reviewed" / "synthetic.jsonl"
    assert export_reviewed(queue, target) == 2
    rows = [json.loads(x) for x in target.read_text().splitlines()]
    assert rows == [
        example(0),
        {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "better"}]},
    ]
    prov = [json.loads(x) for x in provenance_path(target).read_text().splitlines()]
    assert [p["row_sha256"] for p in prov] == [row_sha256(r) for r in rows]
    assert [(p["decision"], p["reviewer"], p["origin"], p["teacher_model"]) for p in prov] == [
        ("accept", "ann", "synthetic", "t"),
        ("edit", "bob", "synthetic", "t"),
    ]
    assert all(p["decided_at"] for p in prov)
