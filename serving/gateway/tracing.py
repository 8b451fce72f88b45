"""Sampled MLflow traces of gateway requests, kept off the request's critical path.

:class:`TracingWriter` sits in front of the request-log writer: every record still goes to the
durable log first (unchanged); an ``answer`` record whose request id falls in the sample is also
put on a bounded queue, which costs the request one ``put_nowait``. A daemon thread drains the
queue into MLflow (:class:`~tuneops.registry.traces.TraceRecorder`). When MLflow is slow or down
the queue fills and further samples are dropped and counted (``tuneops_gateway_traces_dropped``):
traces are a view for people, the request log is the record, so losing a trace never costs an
answer or a log row. Failures are logged at most once a minute.

Sampling hashes the request id, so a given request is in or out of the sample whatever process
answers it.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Protocol

from tuneops.errors import TuneopsError
from tuneops.requestlog import RequestLogWriter, RequestRecord

logger = logging.getLogger(__name__)
QUEUE_SIZE = 1000
_STOP = object()


class TraceSink(Protocol):
    def record(self, record: RequestRecord) -> str: ...


class TraceCounters(Protocol):
    def traced(self) -> None: ...

    def dropped(self, reason: str) -> None: ...


def sampled(request_id: str, rate: float) -> bool:
    """True for a stable ``rate`` share of request ids (0 never, 1 always)."""
    if rate <= 0:
        return False
    if rate >= 1:
        return True
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


class TracingWriter:
    """A request-log writer that also hands sampled answers to a trace exporter thread."""

    def __init__(
        self, writer: RequestLogWriter, sink: TraceSink, rate: float, counters: TraceCounters | None = None
    ) -> None:
        self.writer = writer
        self.rate = rate
        self._sink = sink
        self._counters = counters
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_SIZE)
        self._last_complaint = 0.0
        self._thread = threading.Thread(target=self._export, name="gateway-traces", daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        return self.writer.backlog

    def submit(self, record: RequestRecord) -> Future[None]:
        """Log ``record`` durably (as the plain writer does); queue it for a trace when sampled."""
        done = self.writer.submit(record)
        if record.role == "answer" and sampled(record.request_id, self.rate):
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                self._count_drop("queue_full")
        return done

    def close(self, timeout: float = 5.0) -> None:
        """Export what is queued (for up to ``timeout`` seconds), then stop the thread."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _export(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, RequestRecord)
            try:
                self._sink.record(item)
            except TuneopsError as exc:
                self._count_drop("mlflow_error")
                self._complain(exc)
            except Exception as exc:
                self._count_drop("mlflow_error")
                self._complain(exc)
            else:
                if self._counters is not None:
                    self._counters.traced()

    def _count_drop(self, reason: str) -> None:
        if self._counters is not None:
            self._counters.dropped(reason)

    def _complain(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_complaint >= 60:
            self._last_complaint = now
            logger.warning("MLflow traces: dropping sampled requests while MLflow fails (%s)", exc)
