"""The request log: the one record of served traffic, written by the gateway, read by everyone else.

Rollout, drift and harvest read it through :class:`RequestLog`; only the gateway writes it, through
:class:`RequestLogWriter`. Both tables are append-only (database triggers, see
:mod:`tuneops.append_only`); feedback is a row of its own, never an update.

**One row per upstream attempt.** ``(request_id, role)`` is unique: every request has exactly one
``answer`` row (what the client received, errors included), plus a ``failover`` row when the
challenger failed before any byte was sent and the champion answered instead (that row carries the
challenger's version, arm, status and error, so its failure counts against it), plus a ``shadow``
row for a shadow copy whose answer nobody saw. Counting requests means counting ``answer`` rows.

**Durability.** :meth:`RequestLogWriter.submit` appends the record to a local spool (JSONL
segments, ``fdatasync``-ed in groups: one sync covers every record that arrived while the last
one ran) and returns a future that resolves once the record is in the spool file (``sync="process"``:
written, so the kernel has it even if the process dies) or on disk (``sync="disk"``: fdatasync'd,
so it survives power loss too); a background thread
batches the database inserts. Inserts are ``ON CONFLICT DO NOTHING`` on ``(request_id, role)``, a
segment is deleted once all its rows are committed, and :meth:`RequestLogWriter.start` replays
what is left. So a record whose future resolved survives ``kill -9`` and lands exactly once; a torn
last line (the crash hit mid-write) was never reported durable and is skipped.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from tuneops.append_only import UtcDateTime, as_utc, insert_ignoring_duplicates, open_history_tables, utcnow
from tuneops.errors import StoreError
from tuneops.statedb import describe

try:
    import fcntl
except ImportError:  # Windows: no flock; one writer per spool is then the caller's promise
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)
_datasync = getattr(os, "fdatasync", os.fsync)

Role = Literal["answer", "failover", "shadow"]
ROLES: tuple[Role, ...] = ("answer", "failover", "shadow")

metadata = sa.MetaData()

request_table = sa.Table(
    "request_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("version", sa.String(32), nullable=True),
    sa.Column("arm", sa.String(16), nullable=True),
    sa.Column("user_key_hash", sa.String(64), nullable=True),
    sa.Column("prompt_text", sa.Text, nullable=True),
    sa.Column("response_text", sa.Text, nullable=True),
    sa.Column("prompt_chars", sa.Integer, nullable=False),
    sa.Column("response_chars", sa.Integer, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=True),
    sa.Column("completion_tokens", sa.Integer, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("ttft_ms", sa.Float, nullable=True),
    sa.Column("status_code", sa.Integer, nullable=False),
    sa.Column("error_kind", sa.String(64), nullable=True),
    sa.Column("streamed", sa.Boolean, nullable=False),
    sa.Column("format_ok", sa.Boolean, nullable=True),
    sa.Column("refusal", sa.Boolean, nullable=True),
    sa.Column("mean_logprob", sa.Float, nullable=True),
    sa.UniqueConstraint("request_id", "role", name="request_log_request_role"),
    sa.Index("request_log_model_at", "model", "at"),
)

feedback_table = sa.Table(
    "request_feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.CheckConstraint("score >= 0 AND score <= 1", name="request_feedback_score_range"),
)


@dataclass(frozen=True)
class RequestRecord:
    """One upstream attempt as the gateway saw it. Texts are None when capture is off."""

    request_id: str
    model: str
    at: datetime
    status_code: int
    latency_ms: float
    role: Role = "answer"
    version: str | None = None
    arm: str | None = None
    user_key_hash: str | None = None
    prompt_text: str | None = None
    response_text: str | None = None
    prompt_chars: int = 0
    response_chars: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    error_kind: str | None = None
    streamed: bool = False
    format_ok: bool | None = None
    refusal: bool | None = None
    mean_logprob: float | None = None  # mean token log-probability of the answer, where the provider said

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role is one of {ROLES}, not {self.role!r}")
        object.__setattr__(self, "at", as_utc(self.at))


RECORD_FIELDS = tuple(f.name for f in fields(RequestRecord))


@dataclass(frozen=True)
class LoggedRequest(RequestRecord):
    """A stored attempt with the latest feedback on it (answer rows only)."""

    feedback_score: float | None = None
    feedback_comment: str | None = None
    feedback_at: datetime | None = None


@dataclass(frozen=True)
class Feedback:
    """A score in [0, 1] a client sent about a request's answer."""

    request_id: str
    score: float
    comment: str | None
    at: datetime


def record_values(record: RequestRecord) -> dict[str, object]:
    """The record as column values (also its spool line's keys)."""
    return {name: getattr(record, name) for name in RECORD_FIELDS}


_INSERTS: dict[str, sa.Insert] = {}  # one statement object per dialect: SQLAlchemy's compiled cache
# then finds it without rebuilding it (a new statement per batch cost ~0.6 ms of GIL each)


def insert_records(conn: Connection, records: Sequence[RequestRecord]) -> None:
    """Insert ``records`` in ``conn``, skipping any already stored (replays are no-ops)."""
    if records:
        statement = _INSERTS.get(conn.dialect.name)
        if statement is None:
            statement = insert_ignoring_duplicates(conn, request_table, ["request_id", "role"])
            _INSERTS[conn.dialect.name] = statement
        conn.execute(statement, [record_values(r) for r in records])


ADDED_COLUMNS = ("mean_logprob",)  # nullable columns a request log created earlier may lack


def add_missing_columns(engine: Engine, table: sa.Table, names: Sequence[str]) -> None:
    """Add the nullable ``names`` of ``table`` that its stored table lacks (a tiny additive migration).

    Nothing is rewritten: old rows read NULL, which is what they never recorded. Racing processes
    are fine: PostgreSQL has ``ADD COLUMN IF NOT EXISTS``, and on SQLite the loser finds the column.
    """
    try:
        present = {c["name"] for c in sa.inspect(engine).get_columns(table.name)}
        missing = [table.c[name] for name in names if name not in present]
        for column in missing:
            kind = column.type.compile(dialect=engine.dialect)
            guard = "IF NOT EXISTS " if engine.dialect.name == "postgresql" else ""
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {guard}{column.name} {kind}")
            except SQLAlchemyError:
                if column.name not in {c["name"] for c in sa.inspect(engine).get_columns(table.name)}:
                    raise
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot add {list(names)} to {table.name} in {describe(engine)}: {exc}") from exc


def _latest_feedback() -> sa.Subquery:
    latest = (
        sa.select(sa.func.max(feedback_table.c.id).label("id"))
        .group_by(feedback_table.c.request_id)
        .scalar_subquery()
    )
    return feedback_table.select().where(feedback_table.c.id.in_(latest)).subquery("feedback")


class RequestLog:
    """Reading the request log and appending feedback, on one state database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> RequestLog:
        """Connect to the state database at ``url``; create the tables and triggers if needed.

        A request log made by an earlier tuneops gets the columns added since (see
        :data:`ADDED_COLUMNS`).
        """
        engine = open_history_tables(url, metadata, [request_table.name, feedback_table.name])
        add_missing_columns(engine, request_table, ADDED_COLUMNS)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def window(
        self,
        model: str,
        since: datetime,
        until: datetime,
        versions: Sequence[str] | None = None,
        roles: Sequence[Role] = ("answer",),
    ) -> list[LoggedRequest]:
        """Attempts on ``model`` in ``[since, until)``, oldest first, answers with their feedback."""
        filters = self._filters(model, since, until, versions)
        return self._read(*filters, request_table.c.role.in_(list(roles)))

    def count(
        self, model: str, since: datetime, until: datetime, versions: Sequence[str] | None = None
    ) -> int:
        """How many requests on ``model`` were answered in ``[since, until)``."""
        query = sa.select(sa.func.count()).where(
            *self._filters(model, since, until, versions), request_table.c.role == "answer"
        )
        with self._connect() as conn:
            return int(conn.execute(query).scalar_one())

    def attempts(self, request_id: str) -> list[LoggedRequest]:
        """Every stored attempt of one request (what ``tuneops lineage --request`` shows)."""
        return self._read(request_table.c.request_id == request_id)

    def _read(self, *where: sa.ColumnElement[bool]) -> list[LoggedRequest]:
        fb = _latest_feedback()
        joined = request_table.outerjoin(
            fb, sa.and_(fb.c.request_id == request_table.c.request_id, request_table.c.role == "answer")
        )
        query = (
            sa.select(request_table, fb.c.score, fb.c.comment, fb.c.at.label("feedback_at"))
            .select_from(joined)
            .where(*where)
            .order_by(request_table.c.at, request_table.c.id)
        )
        with self._connect() as conn:
            return [
                LoggedRequest(
                    **{name: row._mapping[name] for name in RECORD_FIELDS},
                    feedback_score=row.score,
                    feedback_comment=row.comment,
                    feedback_at=row.feedback_at,
                )
                for row in conn.execute(query)
            ]

    def add_feedback(
        self, request_id: str, score: float, comment: str | None = None, at: datetime | None = None
    ) -> Feedback:
        """Store a client's score in [0, 1] for ``request_id``.

        The request need not be in the database yet: its row may still be on its way from a
        gateway's spool, so feedback is accepted for any id.
        """
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise ValueError(f"score must be a number in [0, 1], not {score!r}")
        if math.isnan(score):
            raise ValueError("score must be a number in [0, 1], not nan")
        feedback = Feedback(request_id, float(score), comment, as_utc(at or utcnow()))
        try:
            with self.engine.begin() as conn:
                conn.execute(feedback_table.insert().values(**feedback.__dict__))
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot store feedback in {describe(self.engine)}: {exc}") from exc
        return feedback

    @staticmethod
    def _filters(
        model: str, since: datetime, until: datetime, versions: Sequence[str] | None
    ) -> list[sa.ColumnElement[bool]]:
        filters = [
            request_table.c.model == model,
            request_table.c.at >= as_utc(since),
            request_table.c.at < as_utc(until),
        ]
        if versions is not None:
            filters.append(request_table.c.version.in_(list(versions)))
        return filters

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the request log in {describe(self.engine)}: {exc}") from exc


@dataclass(frozen=True)
class ReplayReport:
    """What :meth:`RequestLogWriter.start` found in the spool: segments, records, unreadable lines."""

    segments: int
    records: int
    skipped_lines: int


@dataclass
class _Segment:
    path: Path
    written: int = 0
    confirmed: int = 0
    size: int = 0
    opened: float = field(default_factory=time.monotonic)
    closed: bool = False


def encode_record(record: RequestRecord) -> bytes:
    """One spool line (JSON, newline-terminated)."""
    return orjson.dumps(record_values(record)) + b"\n"


def decode_record(line: bytes) -> RequestRecord:
    """A spool line back into a record; keys from other versions of tuneops are ignored."""
    values = orjson.loads(line)
    values["at"] = datetime.fromisoformat(values["at"])
    return RequestRecord(**{name: values[name] for name in RECORD_FIELDS if name in values})


def read_segment(path: Path) -> tuple[list[RequestRecord], int]:
    """The records of one spool segment and how many lines could not be read (a torn tail)."""
    records, skipped = [], 0
    for line in path.read_bytes().splitlines():
        try:
            records.append(decode_record(line))
        except (ValueError, TypeError, KeyError):
            skipped += 1
    return records, skipped


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_STOP = object()


class RequestSink(Protocol):
    """What the gateway writes records to: the writer below, or a wrapper of it (traces)."""

    @property
    def backlog(self) -> int: ...

    def submit(self, record: RequestRecord) -> Future[None]: ...


def _resolve(items: Sequence[tuple[RequestRecord, Future[None]]], error: Exception | None = None) -> None:
    """Resolve the durability futures of ``items`` not resolved yet (with ``error`` if given)."""
    for _, durable in items:
        if durable.done():
            continue
        if error is None:
            durable.set_result(None)
        else:
            durable.set_exception(error)


class RequestLogWriter:
    """Durable, batched writes of request records (see the module docstring).

    One writer per spool directory (an exclusive ``flock``; a second one is refused). Use as a
    context manager or call :meth:`start` and :meth:`close`. ``batch_size`` and ``flush_seconds``
    bound a database batch; ``segment_bytes`` bounds a spool segment, and a segment whose records
    are all stored is rotated away after ``rotate_seconds``. ``sync`` says when a record counts as
    durable: ``disk`` once fdatasync'd, ``process`` once written to the spool file (the kernel
    keeps it when the process dies; the fdatasync follows at once), which is what ``kill -9``
    needs and spares every answer the disk's sync latency (``serving.request_log_sync``).
    """

    def __init__(
        self,
        log: RequestLog,
        spool_dir: Path,
        *,
        batch_size: int = 500,
        flush_seconds: float = 0.25,
        segment_bytes: int = 16 * 1024 * 1024,
        rotate_seconds: float = 1.0,
        sync: Literal["process", "disk"] = "disk",
    ) -> None:
        self.log, self.spool_dir = log, Path(spool_dir)
        self.sync = sync
        self.batch_size, self.flush_seconds = batch_size, flush_seconds
        self.segment_bytes, self.rotate_seconds = segment_bytes, rotate_seconds
        self._incoming: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._to_db: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._segments: dict[int, _Segment] = {}
        self._active: int = 0
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._submitted = self._stored = 0
        self._threads: list[threading.Thread] = []
        self._state: Literal["new", "running", "closed"] = "new"
        self._deadline = math.inf

    def __enter__(self) -> RequestLogWriter:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def backlog(self) -> int:
        """Records submitted but not yet stored in the database."""
        with self._cond:
            return self._submitted - self._stored

    def start(self) -> ReplayReport:
        """Lock the spool, store whatever a previous process left in it, then start writing.

        Raises:
            StoreError: another writer holds the spool, or the database refused the replay.
        """
        if self._state != "new":
            raise RuntimeError("a RequestLogWriter starts once")
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._lock_spool()
        report = self._replay()
        self._open_segment(self._active + 1)
        self._state = "running"
        for target, name in ((self._spool_loop, "spool"), (self._db_loop, "db")):
            thread = threading.Thread(target=target, name=f"requestlog-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return report

    def submit(self, record: RequestRecord) -> Future[None]:
        """Queue ``record``; the future resolves once it is on disk in the spool (durable).

        Await it with ``asyncio.wrap_future`` in a server, ``.result()`` elsewhere. It fails with
        :class:`StoreError` if the spool cannot be written.
        """
        if self._state != "running":
            raise RuntimeError(f"the request log writer is {self._state}, not running")
        durable: Future[None] = Future()
        with self._cond:
            self._submitted += 1
        self._incoming.put((record, durable))
        return durable

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record submitted so far is stored in the database."""
        with self._cond:
            target = self._submitted
            return self._cond.wait_for(lambda: self._stored >= target, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Store what is queued (up to ``timeout``), drop stored segments, release the spool.

        Records not stored by then stay in the spool for the next :meth:`start`.
        """
        if self._state != "running":
            self._release()
            self._state = "closed"
            return
        self._deadline = time.monotonic() + timeout
        self._state = "closed"
        self._incoming.put(_STOP)
        for thread in self._threads:
            thread.join(max(0.0, self._deadline - time.monotonic()))
        with self._cond:
            segment = self._segments.get(self._active)
            if segment is not None:
                segment.closed = True
                self._drop_if_stored(self._active)
        self._release()

    # -- spool ---------------------------------------------------------------------------------

    def _lock_spool(self) -> None:
        self._lock_fd = os.open(self.spool_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        if fcntl is None:
            return
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise StoreError(
                f"request log spool {self.spool_dir} is in use by another writer",
                hint="give each gateway process its own spool directory",
            ) from exc

    def _release(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None

    def _replay(self) -> ReplayReport:
        paths = sorted(self.spool_dir.glob("requests-*.jsonl"))
        records = skipped = 0
        for path in paths:
            found, bad = read_segment(path)
            records, skipped = records + len(found), skipped + bad
            try:
                with self.log.engine.begin() as conn:
                    for start in range(0, len(found), self.batch_size):
                        insert_records(conn, found[start : start + self.batch_size])
            except SQLAlchemyError as exc:
                raise StoreError(
                    f"cannot replay the request log spool {path} into {describe(self.log.engine)}: {exc}",
                    hint="the spool is kept; start again once the state database answers",
                ) from exc
            self._active = max(self._active, int(path.stem.removeprefix("requests-")))
            path.unlink()
        if paths:
            _sync_dir(self.spool_dir)
        return ReplayReport(len(paths), records, skipped)

    def _open_segment(self, number: int) -> None:
        path = self.spool_dir / f"requests-{number:012d}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _sync_dir(self.spool_dir)
        previous, self._fd = self._fd, fd
        if previous is not None:
            os.close(previous)
        with self._cond:
            old_number, self._active = self._active, number
            self._segments[number] = _Segment(path)
            old = self._segments.get(old_number)
            if old is not None:
                old.closed = True
                self._drop_if_stored(old_number)

    def _should_rotate(self, incoming: int) -> bool:
        with self._cond:
            segment = self._segments[self._active]
            if segment.written == 0:
                return False
            if segment.size + incoming > self.segment_bytes:
                return True
            aged = time.monotonic() - segment.opened >= self.rotate_seconds
            return aged and segment.confirmed == segment.written

    def _spool_loop(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._incoming.get()]
            while len(batch) < 4096:
                try:
                    batch.append(self._incoming.get_nowait())
                except queue.Empty:
                    break
            stopping = _STOP in batch
            items: list[tuple[RequestRecord, Future[None]]] = [b for b in batch if b is not _STOP]  # type: ignore[misc]
            if items:
                self._spool(items)
        self._to_db.put(_STOP)

    def _spool(self, items: list[tuple[RequestRecord, Future[None]]]) -> None:
        data = b"".join(encode_record(record) for record, _ in items)
        try:
            if self._should_rotate(len(data)):
                self._open_segment(self._active + 1)
            assert self._fd is not None
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            if self.sync == "process":  # in the kernel's page cache: a killed gateway loses nothing
                _resolve(items)
            _datasync(self._fd)
        except OSError as exc:
            error = StoreError(f"cannot write the request log spool in {self.spool_dir}: {exc}")
            _resolve(items, error)
            segment_number = None
        else:
            with self._cond:
                segment = self._segments[self._active]
                segment.written += len(items)
                segment.size += len(data)
            _resolve(items)
            segment_number = self._active
        for record, _ in items:
            self._to_db.put((segment_number, record))

    # -- database ------------------------------------------------------------------------------

    def _db_loop(self) -> None:
        stopping = False
        while not stopping:
            batch: list[tuple[int | None, RequestRecord]] = []
            item = self._to_db.get()
            deadline = time.monotonic() + self.flush_seconds
            while item is not _STOP:
                batch.append(item)  # type: ignore[arg-type]
                if len(batch) >= self.batch_size:
                    break
                try:
                    item = self._to_db.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            stopping = item is _STOP
            if batch and not self._store(batch):
                return

    def _store(self, batch: list[tuple[int | None, RequestRecord]]) -> bool:
        """Insert ``batch``, retrying while the database is away; False once closing gives up."""
        delay = 0.05
        while True:
            try:
                with self.log.engine.begin() as conn:
                    insert_records(conn, [record for _, record in batch])
                break
            except SQLAlchemyError as exc:
                if self._state == "closed" and time.monotonic() + delay > self._deadline:
                    return False
                logger.warning("request log insert failed (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        with self._cond:
            for number in {n for n, _ in batch if n is not None}:
                self._segments[number].confirmed += sum(1 for n, _ in batch if n == number)
                self._drop_if_stored(number)
            self._stored += len(batch)
            self._cond.notify_all()
        return True

    def _drop_if_stored(self, number: int) -> None:
        """Delete a closed segment whose rows are all committed (call holding ``_cond``)."""
        segment = self._segments.get(number)
        if segment is not None and segment.closed and segment.confirmed >= segment.written:
            segment.path.unlink(missing_ok=True)
            del self._segments[number]
