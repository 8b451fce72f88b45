"""The request log on real SQLite and PostgreSQL: durable spool, idempotent replay, append-only reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from tuneops.append_only import make_append_only
from tuneops.errors import StoreError
from tuneops.requestlog import (
    ADDED_COLUMNS,
    RequestLog,
    RequestLogWriter,
    RequestRecord,
    decode_record,
    encode_record,
    feedback_table,
    request_table,
)
from tuneops.statedb import make_engine

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@contextmanager
def postgres_schema(database_url: str) -> Iterator[str]:
    """A fresh schema in the session's PostgreSQL database; the URL puts it first on the search path."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{database_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    with postgres_schema(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
def log(state_url: str) -> Iterator[RequestLog]:
    opened = RequestLog.open(state_url)
    RequestLog.open(state_url).close()  # idempotent: tables and triggers exist already
    yield opened
    opened.close()


def record(request_id: str, minute: int = 0, **overrides: object) -> RequestRecord:
    values: dict[str, object] = {
        "request_id": request_id, "model": "claims-triage", "at": T0 + timedelta(minutes=minute),
        "status_code": 200, "latency_ms": 12.5, "version": "1", "arm": "champion",
        "user_key_hash": "ab" * 16, "prompt_text": "hi", "response_text": "Decision: APPROVE",
        "prompt_chars": 2, "response_chars": 17, "prompt_tokens": 3, "completion_tokens": 5,
        "ttft_ms": 4.0, "streamed": True, "format_ok": True, "refusal": False, "mean_logprob": -0.42,
    }  # fmt: skip
    return RequestRecord(**{**values, **overrides})  # type: ignore[arg-type]


def spool_files(spool: Path) -> list[Path]:
    return sorted(spool.glob("requests-*.jsonl"))


def test_records_round_trip_with_failover_shadow_and_feedback(log: RequestLog, tmp_path: Path) -> None:
    answer = record("r1", version="1", arm="champion")
    failed = record(
        "r1", role="failover", version="2", arm="challenger", status_code=504, error_kind="timeout",
        response_text=None, response_chars=0, completion_tokens=None, ttft_ms=None, format_ok=None,
    )  # fmt: skip
    shadow = record("r2", 1, role="shadow", version="2", arm="challenger")
    plain = record("r2", 1, version="1", prompt_text=None, response_text=None, streamed=False, format_ok=None)
    late = record("r3", 10, version="2", arm="challenger")
    with RequestLogWriter(log, tmp_path / "spool") as writer:
        for item in (answer, failed, shadow, plain, late, answer):  # the repeat is stored once
            writer.submit(item).result(timeout=30)
        assert writer.flush(timeout=30)
    log.add_feedback("r1", 0.25, "meh", at=T0 + timedelta(minutes=2))
    log.add_feedback("r1", 1, "great after all", at=T0 + timedelta(minutes=3))
    log.add_feedback("r2", 0.0)

    rows = log.window("claims-triage", T0, T0 + timedelta(minutes=10))
    assert [(r.request_id, r.role) for r in rows] == [("r1", "answer"), ("r2", "answer")]
    first, second = rows
    assert first.feedback_score == 1.0 and first.feedback_comment == "great after all"
    assert first.feedback_at == T0 + timedelta(minutes=3)
    assert RequestRecord(**{k: getattr(first, k) for k in answer.__dict__}) == answer
    assert second.prompt_text is None and second.prompt_chars == 2 and second.format_ok is None
    assert second.feedback_score == 0.0

    every = log.window("claims-triage", T0, T0 + timedelta(hours=1), roles=("answer", "failover", "shadow"))
    assert len(every) == 5
    shadow_row = next(r for r in every if r.role == "shadow")
    assert shadow_row.feedback_score is None  # feedback is about the answer the client saw
    assert [r.role for r in log.attempts("r1")] == ["answer", "failover"]
    assert log.attempts("nope") == []

    assert log.count("claims-triage", T0, T0 + timedelta(hours=1)) == 3
    assert log.count("claims-triage", T0, T0 + timedelta(minutes=10)) == 2  # until is exclusive
    assert log.count("claims-triage", T0, T0 + timedelta(hours=1), versions=["2"]) == 1
    assert log.count("other-model", T0, T0 + timedelta(hours=1)) == 0
    challenger = log.window("claims-triage", T0, T0 + timedelta(hours=1), ["2"], ("answer", "failover"))
    assert [(r.request_id, r.role, r.status_code) for r in challenger] == [
        ("r1", "failover", 504),
        ("r3", "answer", 200),
    ]
    assert all(r.at.tzinfo is not None for r in every)


def test_the_database_refuses_rewriting_history(log: RequestLog, tmp_path: Path) -> None:
    with RequestLogWriter(log, tmp_path / "spool") as writer:
        writer.submit(record("r1")).result(timeout=30)
        writer.flush(timeout=30)
    log.add_feedback("r1", 0.5)
    for statement in (
        request_table.update().values(status_code=200, arm="challenger"),
        request_table.delete(),
        feedback_table.update().values(score=1.0),
        feedback_table.delete(),
    ):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), log.engine.begin() as conn:
            conn.execute(statement)
    assert log.count("claims-triage", T0, T0 + timedelta(hours=1)) == 1


@pytest.mark.parametrize("score", [-0.01, 1.01, float("nan"), True, "0.5", None])
def test_feedback_scores_outside_zero_one_are_refused(log: RequestLog, score: object) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        log.add_feedback("r1", score)  # type: ignore[arg-type]


def test_the_database_checks_the_feedback_range_too(log: RequestLog) -> None:
    with pytest.raises(sa.exc.IntegrityError), log.engine.begin() as conn:
        conn.execute(feedback_table.insert().values(request_id="r", score=2.0, at=T0))


def test_a_torn_tail_is_skipped_and_a_replay_stores_each_record_once(log: RequestLog, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = b"".join(encode_record(record(f"r{i}")) for i in range(5))
    (spool / "requests-000000000007.jsonl").write_bytes(lines + encode_record(record("torn"))[:40])
    (spool / "requests-000000000003.jsonl").write_bytes(lines)  # already replayed once, not yet deleted
    writer = RequestLogWriter(log, spool)
    report = writer.start()
    try:
        assert (report.segments, report.records, report.skipped_lines) == (2, 10, 1)
        assert spool_files(spool) == [spool / "requests-000000000008.jsonl"]  # numbering continues
    finally:
        writer.close()
    rows = log.window("claims-triage", T0, T0 + timedelta(hours=1))
    assert sorted(r.request_id for r in rows) == [f"r{i}" for i in range(5)]
    assert spool_files(spool) == []


def test_one_writer_per_spool(log: RequestLog, tmp_path: Path) -> None:
    with RequestLogWriter(log, tmp_path / "spool"), pytest.raises(StoreError, match="another writer"):
        RequestLogWriter(log, tmp_path / "spool").start()
    with RequestLogWriter(log, tmp_path / "spool"):  # released on close
        pass


def test_segments_rotate_and_go_once_their_rows_are_stored(log: RequestLog, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with RequestLogWriter(log, spool, segment_bytes=2_000, rotate_seconds=0.0) as writer:
        for i in range(60):
            writer.submit(record(f"r{i}")).result(timeout=30)
        assert writer.flush(timeout=30) and writer.backlog == 0
        writer.submit(record("last")).result(timeout=30)
        writer.flush(timeout=30)
        assert len(spool_files(spool)) == 1  # only the active segment is left
    assert spool_files(spool) == []
    assert log.count("claims-triage", T0, T0 + timedelta(hours=1)) == 61


def test_records_stay_durable_while_the_database_is_away(state_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    unprepared = RequestLog(sa.create_engine(f"sqlite:///{tmp_path / 'empty.db'}"))  # no tables: inserts fail
    writer = RequestLogWriter(unprepared, spool, flush_seconds=0.01)
    writer.start()
    for i in range(20):
        writer.submit(record(f"r{i}")).result(timeout=30)
    assert not writer.flush(timeout=0.3)
    writer.close(timeout=0.2)
    unprepared.close()
    assert spool_files(spool)

    log = RequestLog.open(state_url)
    try:
        recovered = RequestLogWriter(log, spool)
        assert recovered.start().records == 20
        recovered.close()
        assert spool_files(spool) == []
        assert log.count("claims-triage", T0, T0 + timedelta(hours=1)) == 20
    finally:
        log.close()


def test_submit_needs_a_running_writer(log: RequestLog, tmp_path: Path) -> None:
    writer = RequestLogWriter(log, tmp_path / "spool")
    with pytest.raises(RuntimeError, match="new"):
        writer.submit(record("r"))
    writer.start()
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(record("r"))
    with pytest.raises(RuntimeError, match="once"):
        writer.start()


def test_records_refuse_unknown_roles() -> None:
    with pytest.raises(ValueError, match="role"):
        record("r", role="retry")
    assert record("r", at=T0.replace(tzinfo=None)).at == T0


CHILD = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from pathlib import Path
    from tuneops.requestlog import RequestLog, RequestLogWriter, RequestRecord

    url, spool, sync = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    log = RequestLog.open(url)
    writer = RequestLogWriter(log, spool, batch_size=100, flush_seconds=0.2, sync=sync)
    writer.start()
    for chunk in range(100_000):
        ids = [f"c{chunk}-{i}" for i in range(10)]
        futures = [
            writer.submit(RequestRecord(request_id=r, model="crash", at=datetime.now(UTC),
                                        status_code=200, latency_ms=1.0))
            for r in ids
        ]
        for future in futures:
            future.result()
        sys.stdout.write("".join(r + "\\n" for r in ids))
        sys.stdout.flush()
    """
)


@pytest.mark.parametrize("sync", ["process", "disk"])
def test_kill_9_loses_no_durable_record_and_duplicates_none(
    state_url: str, tmp_path: Path, sync: str
) -> None:
    script, spool, reported_min = tmp_path / "child.py", tmp_path / "spool", 300
    script.write_text(CHILD)
    RequestLog.open(state_url).close()
    child = subprocess.Popen(
        [sys.executable, str(script), state_url, str(spool), sync], stdout=subprocess.PIPE, text=True
    )
    reported: list[str] = []
    try:
        assert child.stdout is not None
        while len(reported) < reported_min:
            line = child.stdout.readline()
            assert line, f"child exited early with {child.poll()}"
            reported.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)
        reported += [line.strip() for line in child.stdout.read().splitlines() if line.strip()]
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    log = RequestLog.open(state_url)
    try:
        writer = RequestLogWriter(log, spool)
        report = writer.start()
        writer.close()
        assert report.records > 0  # the crash left records in the spool: the replay is exercised
        stored = [
            r.request_id for r in log.window("crash", T0 - timedelta(days=1), T0 + timedelta(days=3650))
        ]
        assert len(stored) == len(set(stored)) >= reported_min
        assert set(reported) <= set(stored)
        again = RequestLogWriter(log, spool)
        assert again.start().records == 0  # a second restart finds nothing left to replay
        again.close()
        assert log.count("crash", T0 - timedelta(days=1), T0 + timedelta(days=3650)) == len(stored)
    finally:
        log.close()


def _old_request_log(url: str) -> None:
    """The state database as a tuneops from before ``mean_logprob`` left it, with one row in it."""
    old = sa.MetaData()
    columns = [column._copy() for column in request_table.columns if column.name not in ADDED_COLUMNS]
    table = sa.Table(
        request_table.name,
        old,
        *columns,
        sa.UniqueConstraint("request_id", "role", name="request_log_request_role"),
    )
    feedback_table.to_metadata(old)
    engine = make_engine(url)
    try:
        old.create_all(engine)
        make_append_only(engine, [request_table.name, feedback_table.name])
        values = {k: v for k, v in record("old").__dict__.items() if k not in ADDED_COLUMNS}
        with engine.begin() as conn:
            conn.execute(table.insert().values(**values))
    finally:
        engine.dispose()


def test_a_request_log_from_before_gets_mean_logprob_on_open(state_url: str, tmp_path: Path) -> None:
    _old_request_log(state_url)
    log = RequestLog.open(state_url)
    try:
        RequestLog.open(state_url).close()  # a second open finds the column there: a no-op
        columns = {c["name"] for c in sa.inspect(log.engine).get_columns(request_table.name)}
        assert "mean_logprob" in columns
        with RequestLogWriter(log, tmp_path / "spool") as writer:
            writer.submit(record("new", 1, mean_logprob=-2.5)).result(timeout=30)
            assert writer.flush(timeout=30)
        rows = log.window("claims-triage", T0, T0 + timedelta(hours=1))
        assert [(r.request_id, r.mean_logprob) for r in rows] == [("old", None), ("new", -2.5)]
        assert rows[0].response_text == "Decision: APPROVE"  # the old row is untouched
        with pytest.raises(sa.exc.DatabaseError), log.engine.begin() as conn:  # still append-only
            conn.execute(request_table.update().values(mean_logprob=-1.0))
    finally:
        log.close()


def test_spool_lines_carry_mean_logprob_and_older_lines_read_as_none() -> None:
    line = encode_record(record("r", mean_logprob=-0.75))
    assert decode_record(line).mean_logprob == -0.75
    older = orjson.loads(line)
    del older["mean_logprob"]
    assert decode_record(orjson.dumps(older)).mean_logprob is None


@pytest.mark.parametrize("sync", ["process", "disk"])
def test_process_sync_answers_once_written_and_disk_sync_once_fdatasynced(
    log: RequestLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: str
) -> None:
    import threading

    import tuneops.requestlog as requestlog

    syncing, release = threading.Event(), threading.Event()

    def slow_datasync(fd: int) -> None:
        syncing.set()
        release.wait(10)
        os.fdatasync(fd)

    monkeypatch.setattr(requestlog, "_datasync", slow_datasync)
    spool = tmp_path / "spool"
    writer = RequestLogWriter(log, spool, sync=sync)  # type: ignore[arg-type]
    writer.start()
    try:
        durable = writer.submit(record("r-sync"))
        assert syncing.wait(10)  # the spool thread wrote the record and sits in fdatasync
        assert b"r-sync" in b"".join(path.read_bytes() for path in spool_files(spool))
        assert durable.done() is (sync == "process")
        release.set()
        durable.result(10)
        assert writer.flush(10)
    finally:
        release.set()
        writer.close()
    assert [
        r.request_id for r in log.window("claims-triage", T0 - timedelta(days=1), T0 + timedelta(days=1))
    ] == ["r-sync"]
