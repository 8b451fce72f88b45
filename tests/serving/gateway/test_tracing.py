"""Sampled MLflow traces: the sample is stable, the request path never waits for MLflow, and
``tuneops serve gateway`` with ``serving.trace_sample_rate: 1`` leaves one trace per answer in the
model's experiment (a real MLflow store, the official SDK as client)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import openai
import pytest

from tests.serving.gateway.conftest import MODEL
from tests.serving.gateway.test_process import KEY, QUESTION, start_gateway, write_project
from tuneops.errors import RegistryError
from tuneops.processes import free_port
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.traces import TAG_ARM, TAG_MODEL, TAG_REQUEST_ID, TAG_VERSION, TraceRecorder
from tuneops.requestlog import RequestLog, RequestLogWriter, RequestRecord
from tuneops.serving.gateway.metrics import GatewayMetrics
from tuneops.serving.gateway.tracing import QUEUE_SIZE, TracingWriter, sampled
from tuneops.testing.chat_stub import ChatStub


def test_sampling_is_stable_and_close_to_the_rate() -> None:
    ids = [f"chatcmpl-{i}" for i in range(20_000)]
    assert not any(sampled(i, 0.0) for i in ids) and all(sampled(i, 1.0) for i in ids)
    share = sum(sampled(i, 0.1) for i in ids) / len(ids)
    assert 0.09 < share < 0.11
    assert [sampled(i, 0.1) for i in ids[:500]] == [sampled(i, 0.1) for i in ids[:500]]


def record(request_id: str, role: str = "answer") -> RequestRecord:
    return RequestRecord(
        request_id=request_id, model=MODEL, at=datetime.now(UTC), status_code=200, latency_ms=12.5,
        role=role, version="2", arm="challenger", prompt_text='[{"role": "user", "content": "hi"}]',
        response_text="hello", prompt_tokens=3, completion_tokens=1,
    )  # fmt: skip


class BlockedSink:
    """A trace sink that hangs until released, like an MLflow server that stopped answering."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.recorded: list[str] = []

    def record(self, rec: RequestRecord) -> str:
        self.release.wait(30)
        self.recorded.append(rec.request_id)
        return rec.request_id


class FailingSink:
    def record(self, rec: RequestRecord) -> str:
        raise RegistryError("MLflow is down")


def metric(metrics: GatewayMetrics, result: str) -> float:
    return metrics.registry.get_sample_value("tuneops_gateway_traces_total", {"result": result}) or 0.0


def test_a_hung_mlflow_drops_traces_never_log_rows(tmp_path: Path) -> None:
    log = RequestLog.open(f"sqlite:///{tmp_path / 'state.db'}")
    writer = RequestLogWriter(log, tmp_path / "spool")
    writer.start()
    sink, metrics = BlockedSink(), GatewayMetrics()
    tracing = TracingWriter(writer, sink, 1.0, metrics)
    started = time.perf_counter()
    futures = [tracing.submit(record(f"r{i}")) for i in range(QUEUE_SIZE + 50)]
    futures.append(tracing.submit(record("r0", role="failover")))  # never traced: not an answer
    for future in futures:
        future.result(30)
    assert time.perf_counter() - started < 20  # sanity bound only: nothing waited for the sink
    assert metric(metrics, "queue_full") >= 49  # the exporter holds one, the queue QUEUE_SIZE
    sink.release.set()
    tracing.close()
    writer.close()
    assert len(sink.recorded) == QUEUE_SIZE + 50 - metric(metrics, "queue_full")
    assert log.count(MODEL, datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC)) == QUEUE_SIZE + 50
    log.close()


def test_mlflow_errors_are_counted_and_the_writer_keeps_going(tmp_path: Path) -> None:
    log = RequestLog.open(f"sqlite:///{tmp_path / 'state.db'}")
    with RequestLogWriter(log, tmp_path / "spool") as writer:
        metrics = GatewayMetrics()
        tracing = TracingWriter(writer, FailingSink(), 1.0, metrics)
        for i in range(5):
            tracing.submit(record(f"f{i}")).result(10)
        tracing.close()
    assert metric(metrics, "mlflow_error") == 5 and metric(metrics, "recorded") == 0
    log.close()


@pytest.fixture
def restore_tracking_uri() -> Iterator[None]:
    before = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(before)


def test_a_record_becomes_a_trace_with_tags_usage_and_texts(
    mlflow_store: object, restore_tracking_uri: None
) -> None:
    store = RegistryStore(mlflow_store.tracking_uri, mlflow_store.artifact_root)  # type: ignore[attr-defined]
    recorder = TraceRecorder(store, MODEL)
    trace_id = recorder.record(record("chatcmpl-abc"))
    (view,) = recorder.traces()
    assert view.trace_id == trace_id and view.status == "OK"
    assert (
        view.tags[TAG_MODEL] == MODEL and view.tags[TAG_VERSION] == "2" and view.tags[TAG_ARM] == "challenger"
    )
    assert view.tags[TAG_REQUEST_ID] == "chatcmpl-abc"
    assert view.token_usage == {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}
    assert view.inputs["messages"] == [{"role": "user", "content": "hi"}]
    assert view.outputs["choices"][0]["message"]["content"] == "hello"


@pytest.mark.slow
def test_serve_gateway_traces_every_answer_at_rate_one(
    tmp_path: Path, stub: ChatStub, claims: RegistryStore
) -> None:
    project = write_project(tmp_path / "project", stub.base_url)
    project.write_text(project.read_text() + "  trace_sample_rate: 1\n")
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    gateway = start_gateway(project.parent, claims, state_url, free_port())
    try:
        client = openai.OpenAI(base_url=gateway.url, api_key=KEY, max_retries=0)
        ids = [
            client.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION).headers[
                "x-request-id"
            ]
            for _ in range(3)
        ]
        recorder = TraceRecorder(claims, MODEL)
        deadline = time.monotonic() + 30
        while len(traces := recorder.traces()) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        gateway.stop()
    assert gateway.process.returncode == 0, gateway.log_tail()
    assert sorted(t.tags[TAG_REQUEST_ID] for t in traces) == sorted(ids)
    assert {t.tags[TAG_VERSION] for t in traces} == {"1"} and {t.tags[TAG_ARM] for t in traces} == {
        "champion"
    }
    assert KEY not in str([(t.inputs, t.outputs, t.tags) for t in traces])
