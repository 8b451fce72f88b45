"""Prometheus metrics of one gateway (a registry per app, so two apps in a process never collide).

Labels are ``model``, ``version`` and ``arm``; ``model`` is a served name or ``unknown`` (a client
cannot create label values by asking for made-up models), ``version``/``arm`` empty when the
request was refused before routing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LABELS = ("model", "version", "arm")
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"))


class GatewayMetrics:
    """The gateway's counters and histograms, exposed by :meth:`render` at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tuneops_gateway_requests", "Chat completion requests answered, by status code.",
            [*_LABELS, "status"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "tuneops_gateway_errors", "Failed attempts (failed-over challenger attempts included), by kind.",
            [*_LABELS, "kind"], registry=r,
        )  # fmt: skip
        self.failovers = Counter(
            "tuneops_gateway_failovers", "Challenger attempts that failed and were answered by the champion.",
            ["model", "version"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "tuneops_gateway_request_seconds", "Time from request to the last byte of the answer.",
            _LABELS, buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "tuneops_gateway_time_to_first_token_seconds", "Streamed requests: time to the first event.",
            _LABELS, buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "tuneops_gateway_tokens", "Tokens reported by the upstreams.", [*_LABELS, "kind"], registry=r
        )
        self.feedback = Counter("tuneops_gateway_feedback", "Feedback scores received.", registry=r)
        self.refresh_failures = Gauge(
            "tuneops_gateway_routing_refresh_failures",
            "Routing refreshes that failed since start.",
            registry=r,
        )
        self.refreshed_at = Gauge(
            "tuneops_gateway_routing_refreshed_timestamp_seconds",
            "When routing was last refreshed.",
            registry=r,
        )
        self.request_log_backlog = Gauge(
            "tuneops_gateway_request_log_backlog", "Request records in the spool, not yet in the database.",
            registry=r,
        )  # fmt: skip
        self.traces = Counter(
            "tuneops_gateway_traces", "Sampled requests written to MLflow as traces (result=recorded) "
            "or dropped (result=queue_full: MLflow too slow; result=mlflow_error).", ["result"], registry=r,
        )  # fmt: skip

        self.local_service_restarts = Counter(
            "tuneops_gateway_local_service_restarts",
            "Times the gateway started the local service again after the one it started exited.",
            registry=r,
        )

    def traced(self) -> None:
        self.traces.labels("recorded").inc()

    def dropped(self, reason: str) -> None:
        self.traces.labels(reason).inc()

    def answered(
        self,
        model: str,
        version: str,
        arm: str,
        status: int,
        seconds: float,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        ttft_seconds: float | None = None,
    ) -> None:
        """Count one answered request."""
        self.requests.labels(model, version, arm, str(status)).inc()
        self.latency.labels(model, version, arm).observe(seconds)
        if ttft_seconds is not None:
            self.ttft.labels(model, version, arm).observe(ttft_seconds)
        if prompt_tokens:
            self.tokens.labels(model, version, arm, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self.tokens.labels(model, version, arm, "completion").inc(completion_tokens)

    def failed(self, model: str, version: str, arm: str, kind: str) -> None:
        self.errors.labels(model, version, arm, kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
