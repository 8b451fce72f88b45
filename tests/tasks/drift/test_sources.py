"""The drift check's window from the request log, confidence included: served through a real gateway.

A champion registered on a versioned dataset (``tests/flows/test_monitor.py``'s project), a chat
stub as its upstream that is sure or unsure of every token it writes (or reports nothing), the
gateway in front of it writing the request log; then the check ``tuneops monitor`` runs.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.flows.test_monitor import MODEL, _claims, champion_project  # noqa: F401 - a fixture
from tuneops.registry.ledger import Ledger
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.requestlog import LoggedRequest, RequestLog, RequestLogWriter
from tuneops.routing_state import RoutingState
from tuneops.serving.gateway.app import Gateway, GatewayConfig
from tuneops.serving.gateway.upstreams import provider_endpoints
from tuneops.settings import TuneopsSettings
from tuneops.spec import LocalProviderConfig, ServingConfig, load_spec
from tuneops.tasks.drift.check import run_drift_check
from tuneops.tasks.drift.sources import window_sample
from tuneops.testing.chat_stub import LogprobFn, running_chat_stub

REQUESTS = 60


def test_the_window_carries_each_answers_mean_logprob() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    rows = [
        LoggedRequest(
            request_id=f"r{i}", model="m", at=at, status_code=200, latency_ms=1.0, mean_logprob=value
        )
        for i, value in enumerate((-0.25, None, -3.0))
    ]
    assert list(window_sample(rows).mean_logprobs) == [-0.25, None, -3.0]


def _serve_through_gateway(settings: TuneopsSettings, logprob: LogprobFn | None, prompts: list[str]) -> None:
    """Send ``prompts`` to the champion through a gateway whose upstream is a chat stub."""
    url = settings.state_db_url or ""
    request_log, routing, ledger = RequestLog.open(url), RoutingState.open(url), Ledger.open(url)
    writer = RequestLogWriter(request_log, settings.state_home / "spool-gateway")
    writer.start()
    try:
        with running_chat_stub(logprob=logprob) as stub:
            endpoints = provider_endpoints(LocalProviderConfig(base_url=stub.base_url), settings)
            gateway = Gateway(
                GatewayConfig((MODEL,), serving=ServingConfig(capture_text=False)),
                store=RegistryStore.from_settings(settings),
                routing=routing,
                ledger=ledger,
                request_log=request_log,
                writer=writer,
                endpoints=endpoints,
            )

            async def send() -> None:
                await gateway.start()
                try:
                    async with httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=gateway.asgi()), base_url="http://gw/v1", timeout=30
                    ) as client:
                        for prompt in prompts:
                            body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
                            reply = await client.post("/chat/completions", json=body)
                            assert reply.status_code == 200, reply.text
                            assert reply.json()["choices"][0]["logprobs"] is None  # never asked for
                finally:
                    await gateway.stop()

            asyncio.run(send())
        assert writer.flush(30)
    finally:
        writer.close()
        for store in (request_log, routing, ledger):
            store.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("upstream", "expected"),
    [("unsure", "drifted"), ("sure", "not drifted"), ("silent", "not measured")],
)
def test_low_confidence_answers_raise_the_signal(
    champion_project: tuple[Path, TuneopsSettings, str],  # noqa: F811
    upstream: str,
    expected: str,
) -> None:
    spec_path, settings, version = champion_project
    spec_path.write_text(
        spec_path.read_text(encoding="utf-8").replace("min_requests: 200", f"min_requests: {REQUESTS}"),
        encoding="utf-8",
    )
    logprob: LogprobFn | None = {
        "unsure": lambda _model, token: -1.5 - 0.1 * len(token),  # every answer's mean below -1.0
        "sure": lambda _model, token: -0.05 * len(token),
        "silent": None,  # an upstream that returns no logprobs
    }[upstream]
    _serve_through_gateway(settings, logprob, _claims(REQUESTS, seed=8))

    spec, _ = load_spec(spec_path)
    check = run_drift_check(spec, settings)
    signal = next(s for s in check.verdict.signals if s.name == "low_confidence_share")
    assert check.verdict.requests == REQUESTS and check.verdict.version == version
    if expected == "drifted":
        assert signal.drifted and signal.observed == 1.0, signal.message
        assert "low_confidence_share" in {s.name for s in check.verdict.drifted_signals}
        assert "low-confidence answers 100.0% > 20%" in signal.message
    elif expected == "not drifted":
        assert signal.measured and not signal.drifted and signal.observed == 0.0, signal.message
    else:
        assert not signal.measured and "capture_logprobs" in signal.message, signal.message
    assert json.dumps(check.to_dict())  # what ``tuneops monitor --json`` prints
