"""Gateway requests as MLflow traces, so MLflow's trace and usage views show tuneops traffic.

The request log stays the record of traffic (rollout, drift and lineage read it); a trace is a
sampled copy for people who look in MLflow. One trace per answered request: a single
``CHAT_MODEL`` span named ``chat.completions`` with the request's real start and end times, the
token usage where MLflow's usage charts read it (``mlflow.chat.tokenUsage``), and tags naming the
registered model, version, arm and request id. Texts are in the trace only when the gateway
captures them (``serving.capture_text``); otherwise the span holds sizes.

MLflow's trace exporter is process-wide: it sends to the *global* tracking URI, whatever client
started the trace. So a recorder points the process at its store (the gateway process has one
store), and exports synchronously: the caller is already a background thread, and a synchronous
export is one whose failure that thread sees.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.entities import SpanType
from mlflow.tracing.constant import SpanAttributeKey
from mlflow.tracking import MlflowClient

from tuneops.registry.mlflow_store import RegistryStore
from tuneops.requestlog import RequestRecord

TRACE_NAME = "chat.completions"
TAG_MODEL = "tuneops.model"
TAG_VERSION = "tuneops.version"
TAG_ARM = "tuneops.arm"
TAG_REQUEST_ID = "tuneops.request_id"
TAG_SOURCE = "tuneops.source"


@dataclass(frozen=True)
class TraceView:
    """A recorded trace, read back (for tests and `tuneops` commands; not an MLflow object)."""

    trace_id: str
    tags: dict[str, str]
    status: str
    inputs: Any
    outputs: Any
    token_usage: dict[str, int] | None


class TraceRecorder:
    """Writes request records as traces into one experiment (the model's, like its runs)."""

    def __init__(self, store: RegistryStore, experiment_name: str) -> None:
        self.store = store
        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
        mlflow.set_tracking_uri(store.tracking_uri)
        self._client = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.registry_uri)
        with store.errors(f"creating the MLflow experiment {experiment_name!r} for traces"):
            self.experiment_id = store.ensure_experiment(experiment_name)

    def record(self, record: RequestRecord) -> str:
        """Write one request as a finished trace; returns its trace id.

        Raises:
            RegistryError: MLflow refused the trace.
        """
        start_ns = int(record.at.timestamp() * 1e9)
        end_ns = start_ns + int(record.latency_ms * 1e6)
        tags = {
            TAG_MODEL: record.model,
            TAG_VERSION: record.version or "",
            TAG_ARM: record.arm or "",
            TAG_REQUEST_ID: record.request_id,
            TAG_SOURCE: "gateway",
        }
        attributes: dict[str, Any] = {
            "status_code": record.status_code,
            "latency_ms": record.latency_ms,
            "streamed": record.streamed,
            SpanAttributeKey.MODEL: record.model,
        }
        if record.ttft_ms is not None:
            attributes["ttft_ms"] = record.ttft_ms
        if record.error_kind:
            attributes["error_kind"] = record.error_kind
        if record.format_ok is not None:
            attributes["format_ok"] = record.format_ok
        usage = _usage(record)
        if usage is not None:
            attributes[SpanAttributeKey.CHAT_USAGE] = usage
        with self.store.errors(f"recording request {record.request_id} as an MLflow trace"):
            span = self._client.start_trace(
                TRACE_NAME,
                span_type=SpanType.CHAT_MODEL,
                inputs=_inputs(record),
                tags=tags,
                experiment_id=self.experiment_id,
                start_time_ns=start_ns,
            )
            self._client.end_trace(
                span.trace_id,
                outputs=_outputs(record),
                attributes=attributes,
                status="OK" if record.status_code < 400 else "ERROR",
                end_time_ns=end_ns,
            )
        return str(span.trace_id)

    def traces(self, *, max_results: int = 100) -> list[TraceView]:
        """The experiment's gateway traces, newest first."""
        with self.store.errors("reading MLflow traces"):
            found = self._client.search_traces(
                locations=[self.experiment_id],
                filter_string=f"tags.`{TAG_SOURCE}` = 'gateway'",
                max_results=max_results,
            )
        views = []
        for trace in found:
            root = trace.data.spans[0] if trace.data.spans else None
            usage = root.get_attribute(SpanAttributeKey.CHAT_USAGE) if root else None
            views.append(
                TraceView(
                    trace_id=trace.info.trace_id,
                    tags=dict(trace.info.tags),
                    status=str(trace.info.state),
                    inputs=root.inputs if root else None,
                    outputs=root.outputs if root else None,
                    token_usage=usage if isinstance(usage, dict) else None,
                )
            )
        return views


def _usage(record: RequestRecord) -> dict[str, int] | None:
    if record.prompt_tokens is None and record.completion_tokens is None:
        return None
    prompt, completion = record.prompt_tokens or 0, record.completion_tokens or 0
    return {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}


def _inputs(record: RequestRecord) -> dict[str, Any]:
    if record.prompt_text is None:
        return {"model": record.model, "prompt_chars": record.prompt_chars}
    return {"model": record.model, "messages": _messages(record.prompt_text)}


def _outputs(record: RequestRecord) -> dict[str, Any]:
    if record.response_text is None:
        return {"response_chars": record.response_chars}
    return {"choices": [{"message": {"role": "assistant", "content": record.response_text}}]}


def _messages(prompt_text: str) -> Any:
    """The request's messages when the log kept them as JSON, else the text as one user turn."""
    try:
        parsed = json.loads(prompt_text)
    except ValueError:
        return [{"role": "user", "content": prompt_text}]
    return parsed if isinstance(parsed, list) else [{"role": "user", "content": prompt_text}]
