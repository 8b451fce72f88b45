"""The review queue: candidate examples a person accepts, rejects or edits before training on them.

A queue is a folder of two append-only JSONL journals (``<state>/review/<queue>/``):

* ``items.jsonl``: candidates (synthetic or harvested), each with its provenance;
* ``decisions.jsonl``: one line per decision (accept / reject / edit, reviewer, time).

Every append takes an exclusive ``flock`` on the journal, re-reads what others wrote meanwhile,
writes one line and ``fsync``s it before returning, so a decision is durable before the next
item is shown (a crash loses nothing already decided), several reviewers can work on one queue
at once (an item another reviewer decided meanwhile is reported, not decided twice), and a
restarted review resumes at the first undecided item. A torn last line (a crash mid-write) is
ignored on read and never hides the lines before it.

``export_reviewed`` writes the accepted (and edited) examples as plain chat JSONL (only
``messages``/``tools``, what fine-tuning reads) plus a provenance sidecar, ``<file>.provenance``
(JSON lines, deliberately not ``*.jsonl`` so a ``data/reviewed/*.jsonl`` glob never trains on
it), one line per row: the row's sha256, origin (synthetic / harvest), teacher model, prompt
template, request ids, reviewer and decision time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

Decision = Literal["accept", "reject", "edit"]
DECISIONS: tuple[Decision, ...] = ("accept", "reject", "edit")


def row_sha256(example: dict[str, Any]) -> str:
    """Content address of one example (canonical JSON), as the provenance sidecar keys rows."""
    return hashlib.sha256(json.dumps(example, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class QueueItem:
    """One candidate: its example (``{"messages": [...]}``) and where it came from."""

    item_id: str
    example: dict[str, Any]
    provenance: dict[str, Any]


@dataclass(frozen=True)
class ReviewDecision:
    """A durable decision; ``example`` is the edited example for ``edit``, else None."""

    item_id: str
    decision: Decision
    reviewer: str
    decided_at: str
    example: dict[str, Any] | None = None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_bytes().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a torn line from a crash mid-write: everything before it still counts
    return rows


def _append(fd: int, rows: Sequence[dict[str, Any]]) -> None:
    data = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)
    size = os.fstat(fd).st_size
    if size:  # a torn last line must not swallow the next record
        with open(fd, "rb", closefd=False) as handle:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                data = b"\n" + data
    os.write(fd, data)
    os.fsync(fd)


class ReviewQueue:
    """A review queue on disk (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.items_path = self.folder / "items.jsonl"
        self.decisions_path = self.folder / "decisions.jsonl"

    @classmethod
    def named(cls, state_home: Path, name: str) -> ReviewQueue:
        return cls(Path(state_home) / "review" / name)

    def add(self, items: Sequence[QueueItem]) -> int:
        """Append candidates not already queued (by id); returns how many were new."""
        with _locked(self.items_path) as fd:
            known = {row["item_id"] for row in _read_lines(self.items_path)}
            new = [i for i in items if i.item_id not in known]
            new = list({i.item_id: i for i in new}.values())
            if new:
                _append(
                    fd,
                    [{"item_id": i.item_id, "example": i.example, "provenance": i.provenance} for i in new],
                )
        return len(new)

    def items(self) -> list[QueueItem]:
        return [
            QueueItem(r["item_id"], r["example"], r.get("provenance", {}))
            for r in _read_lines(self.items_path)
        ]

    def decisions(self) -> dict[str, ReviewDecision]:
        """The decision per item: the first one recorded (later attempts were refused)."""
        out: dict[str, ReviewDecision] = {}
        for r in _read_lines(self.decisions_path):
            if r.get("decision") in DECISIONS and r.get("item_id") not in out:
                out[r["item_id"]] = ReviewDecision(
                    r["item_id"],
                    r["decision"],
                    r.get("reviewer", ""),
                    r.get("decided_at", ""),
                    r.get("example"),
                )
        return out

    def pending(self) -> list[QueueItem]:
        """Undecided items in queue order: where a review resumes."""
        decided = self.decisions()
        return [i for i in self.items() if i.item_id not in decided]

    def decide(
        self, item_id: str, decision: Decision, reviewer: str, example: dict[str, Any] | None = None
    ) -> ReviewDecision:
        """Record a decision durably (fsync'd before returning).

        Returns the decision that stands: this one, or the one another reviewer recorded first.

        Raises:
            ValueError: unknown decision, an edit without its example, or an unknown item.
        """
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
        if (decision == "edit") != (example is not None):
            raise ValueError("an edit carries the edited example; accept and reject do not")
        if item_id not in {i.item_id for i in self.items()}:
            raise ValueError(f"no item {item_id!r} in {self.folder}")
        with _locked(self.decisions_path) as fd:
            existing = self.decisions().get(item_id)
            if existing is not None:
                return existing
            made = ReviewDecision(item_id, decision, reviewer, datetime.now(UTC).isoformat(), example)
            row = {
                "item_id": item_id,
                "decision": decision,
                "reviewer": reviewer,
                "decided_at": made.decided_at,
            }
            if example is not None:
                row["example"] = example
            _append(fd, [row])
        return made

    def counts(self) -> dict[str, int]:
        decided = self.decisions()
        out = {d: sum(1 for x in decided.values() if x.decision == d) for d in DECISIONS}
        out["pending"] = len(self.items()) - len(decided)
        return out


def export_reviewed(queue: ReviewQueue, target: Path) -> int:
    """Write accepted/edited examples to ``target`` (chat JSONL) and its provenance sidecar.

    Rewritten whole from the journals each time (atomic rename), so it always equals the queue's
    decisions. Returns the number of rows.
    """
    decided = queue.decisions()
    rows, provenance = [], []
    for item in queue.items():
        made = decided.get(item.item_id)
        if made is None or made.decision == "reject":
            continue
        example = made.example if made.decision == "edit" and made.example is not None else item.example
        example = {k: v for k, v in example.items() if k in ("messages", "tools")}
        rows.append(example)
        provenance.append(
            {
                "row_sha256": row_sha256(example),
                "item_id": item.item_id,
                **item.provenance,
                "decision": made.decision,
                "reviewer": made.reviewer,
                "decided_at": made.decided_at,
            }
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    for path, lines in ((target, rows), (provenance_path(target), provenance)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), encoding="utf-8")
        tmp.replace(path)
    return len(rows)


def provenance_path(reviewed: Path) -> Path:
    """The provenance sidecar of a reviewed JSONL file."""
    return reviewed.with_name(reviewed.name + ".provenance")  # not *.jsonl: data globs must not take it
