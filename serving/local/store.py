"""SQLite persistence of the local service's files, jobs, events and checkpoints.

State survives a restart (or a SIGKILL) of the service: the database runs in WAL mode and every
change is committed before the HTTP answer goes out. Jobs keep their public OpenAI object as
JSON (what the API returns) next to an ``internal`` JSON (resume bookkeeping, paths), so the API
shape and the worker's needs evolve separately.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneops.errors import StoreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, created_at INTEGER NOT NULL,
    filename TEXT NOT NULL, purpose TEXT NOT NULL, bytes INTEGER NOT NULL, path TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, status TEXT NOT NULL,
    body TEXT NOT NULL, internal TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL, type TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL, step INTEGER NOT NULL, epoch INTEGER NOT NULL,
    model_name TEXT UNIQUE NOT NULL, metrics TEXT NOT NULL, path TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class FileRecord:
    id: str
    created_at: int
    filename: str
    purpose: str
    bytes: int
    path: str

    def public(self) -> dict[str, Any]:
        """The OpenAI ``file`` object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass(frozen=True)
class CheckpointRecord:
    id: str
    job_id: str
    created_at: int
    step: int
    epoch: int
    model_name: str
    metrics: dict[str, float]
    path: str

    def public(self) -> dict[str, Any]:
        """The OpenAI ``fine_tuning.job.checkpoint`` object."""
        return {
            "object": "fine_tuning.job.checkpoint",
            "id": self.id,
            "created_at": self.created_at,
            "fine_tuned_model_checkpoint": self.model_name,
            "fine_tuning_job_id": self.job_id,
            "metrics": self.metrics,
            "step_number": self.step,
        }


class ServiceStore:
    """Thread-safe access to the service database (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the service database {path}: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"service database error: {exc}") from exc

    # files
    def add_file(self, record: FileRecord) -> None:
        self._run(
            "INSERT INTO files (id, created_at, filename, purpose, bytes, path) VALUES (?, ?, ?, ?, ?, ?)",
            (record.id, record.created_at, record.filename, record.purpose, record.bytes, record.path),
        )

    def get_file(self, file_id: str) -> FileRecord | None:
        rows = self._run(
            "SELECT id, created_at, filename, purpose, bytes, path FROM files WHERE id = ?", (file_id,)
        )
        return FileRecord(*rows[0]) if rows else None

    def list_files(self) -> list[FileRecord]:
        """Oldest first."""
        rows = self._run("SELECT id, created_at, filename, purpose, bytes, path FROM files ORDER BY seq")
        return [FileRecord(*row) for row in rows]

    def delete_file(self, file_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0

    # jobs
    def add_job(self, job: dict[str, Any], internal: dict[str, Any]) -> None:
        self._run(
            "INSERT INTO jobs (id, status, body, internal) VALUES (?, ?, ?, ?)",
            (job["id"], job["status"], json.dumps(job), json.dumps(internal)),
        )

    def get_job(self, job_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        rows = self._run("SELECT body, internal FROM jobs WHERE id = ?", (job_id,))
        return (json.loads(rows[0][0]), json.loads(rows[0][1])) if rows else None

    def update_job(
        self, job_id: str, *, internal: dict[str, Any] | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Change public fields (and optionally replace ``internal``); returns the new public job."""
        with self._lock:
            row = self._db.execute("SELECT body, internal FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise StoreError(f"no job {job_id}")
            body: dict[str, Any] = json.loads(row[0]) | fields
            new_internal = internal if internal is not None else json.loads(row[1])
            self._db.execute(
                "UPDATE jobs SET status = ?, body = ?, internal = ? WHERE id = ?",
                (body["status"], json.dumps(body), json.dumps(new_internal), job_id),
            )
            return body

    def list_jobs(self) -> list[dict[str, Any]]:
        """Newest first, as OpenAI lists them."""
        return [json.loads(row[0]) for row in self._run("SELECT body FROM jobs ORDER BY seq DESC")]

    def job_ids_with_status(self, statuses: Iterable[str]) -> list[str]:
        """Oldest first: the order the worker takes queued jobs in."""
        wanted = list(statuses)
        marks = ",".join("?" * len(wanted))
        return [
            row[0] for row in self._run(f"SELECT id FROM jobs WHERE status IN ({marks}) ORDER BY seq", wanted)
        ]

    # events
    def add_event(
        self,
        event_id: str,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        self._run(
            "INSERT INTO events (id, job_id, created_at, level, message, type, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event_id, job_id, int(time.time()), level, message, type, json.dumps(data or {})),
        )

    def list_events(self, job_id: str) -> list[dict[str, Any]]:
        """Newest first (OpenAI's order)."""
        rows = self._run(
            "SELECT id, created_at, level, message, type, data FROM events "
            "WHERE job_id = ? ORDER BY seq DESC",
            (job_id,),
        )
        return [
            {
                "object": "fine_tuning.job.event",
                "id": r[0],
                "created_at": r[1],
                "level": r[2],
                "message": r[3],
                "type": r[4],
                "data": json.loads(r[5]),
            }
            for r in rows
        ]

    # checkpoints
    def add_checkpoint(self, record: CheckpointRecord) -> None:
        self._run(
            "INSERT OR REPLACE INTO checkpoints "
            "(id, job_id, created_at, step, epoch, model_name, metrics, path) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.job_id,
                record.created_at,
                record.step,
                record.epoch,
                record.model_name,
                json.dumps(record.metrics),
                record.path,
            ),
        )

    def list_checkpoints(self, job_id: str) -> list[CheckpointRecord]:
        """Newest first."""
        rows = self._run(
            "SELECT id, job_id, created_at, step, epoch, model_name, metrics, path FROM checkpoints "
            "WHERE job_id = ? ORDER BY step DESC",
            (job_id,),
        )
        return [CheckpointRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7]) for r in rows]

    def checkpoint_by_model(self, model_name: str) -> CheckpointRecord | None:
        rows = self._run(
            "SELECT id, job_id, created_at, step, epoch, model_name, metrics, path FROM checkpoints "
            "WHERE model_name = ?",
            (model_name,),
        )
        r = rows[0] if rows else None
        return CheckpointRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7]) if r else None
