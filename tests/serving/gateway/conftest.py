"""Fixtures of the gateway tests: a real MLflow store with versions, real upstream stubs, the gateway.

``claims`` registers ``claims-triage`` versions 1 (champion) and 2 (challenger) whose endpoint
models the chat stub answers differently (``v1 says: ...``), so an answer shows who served it.
``gateway_factory`` builds a :class:`Gateway` on a fresh state database and spool; it can be
driven in process (``ASGITransport``) or served by uvicorn on a free port (``serve``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tuneops.processes import free_port
from tuneops.registry.ledger import Ledger
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.requestlog import RequestLog, RequestLogWriter
from tuneops.routing_state import RoutingState
from tuneops.serving.gateway.app import Gateway, GatewayConfig
from tuneops.serving.gateway.upstreams import provider_endpoints
from tuneops.settings import TuneopsSettings
from tuneops.spec import LocalProviderConfig, ServingConfig
from tuneops.testing.chat_stub import ChatStub, Messages, echo_answer, running_chat_stub

MODEL = "claims-triage"
ENDPOINT_MODELS = {"1": "ft:tiny:claims-v1", "2": "ft:tiny:claims-v2", "3": "ft:tiny:claims-v3"}


def answer_by_model(model: str, messages: Messages) -> str:
    """Each endpoint model answers in its own voice: ``v1 says: <question>``."""
    return f"{model.rsplit('-', 1)[-1]} says: {echo_answer(model, messages)}"


@pytest.fixture
def stub() -> Iterator[ChatStub]:
    with running_chat_stub(answer=answer_by_model, models=tuple(ENDPOINT_MODELS.values())) as running:
        yield running


@pytest.fixture
def store(mlflow_store: Any) -> RegistryStore:
    return RegistryStore(mlflow_store.tracking_uri, mlflow_store.artifact_root)


def register(store: RegistryStore, version: str, provider: str = "local") -> str:
    """Register version ``version`` of ``claims-triage`` with the tags a fine-tune would leave."""
    store.ensure_registered_model(MODEL)
    created = store.create_version(
        MODEL,
        f"{store.artifact_root}/claims-v{version}",
        None,  # type: ignore[arg-type]
        {"tuneops.provider": provider, "tuneops.endpoint_model": ENDPOINT_MODELS[version]},
        "",
        None,
    )
    assert created.version == version
    return created.version


@pytest.fixture
def claims(store: RegistryStore) -> RegistryStore:
    """``claims-triage`` v1 champion, v2 challenger, v3 registered without an alias."""
    for version in ("1", "2", "3"):
        register(store, version)
    store.set_alias(MODEL, "champion", "1")
    store.set_alias(MODEL, "challenger", "2")
    return store


@dataclass
class Harness:
    """A gateway and the stores it writes, for one test."""

    gateway: Gateway
    store: RegistryStore
    routing: RoutingState
    ledger: Ledger
    request_log: RequestLog
    writer: RequestLogWriter
    state_url: str
    spool: Path

    def asgi_client(self, **headers: str) -> httpx.AsyncClient:
        """An httpx client talking to the gateway in process (start it with ``running``)."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.gateway.asgi()),
            base_url="http://gateway/v1",
            headers=headers,
            timeout=30,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Harness]:
        """The gateway started in this event loop (what the app's lifespan does under uvicorn)."""
        await self.gateway.start()
        try:
            yield self
        finally:
            await self.gateway.stop()

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve the gateway with uvicorn on a free port in a thread; yields its /v1 base URL."""
        port = free_port()
        config = uvicorn.Config(
            self.gateway.asgi(), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="gateway-uvicorn", daemon=True)
        thread.start()
        try:
            while not server.started:
                if not thread.is_alive():
                    raise RuntimeError("the gateway's uvicorn stopped while starting")
                thread.join(0.02)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            server.should_exit = True
            thread.join(30)

    def answers(self) -> list[Any]:
        """Every answer row in the request log (after the writer flushed)."""
        assert self.writer.flush(30)
        with self.request_log.engine.connect() as conn:
            from tuneops.requestlog import request_table

            return list(conn.execute(request_table.select().order_by(request_table.c.id)))


@pytest.fixture
def gateway_factory(
    tmp_path: Path, claims: RegistryStore, stub: ChatStub
) -> Iterator[Callable[..., Harness]]:
    opened: list[Harness] = []

    def build(
        *,
        api_keys: tuple[str, ...] = (),
        base_url: str | None = None,
        serving: ServingConfig | None = None,
        name: str = "gw",
        endpoints: dict[str, Any] | None = None,
        **config: Any,
    ) -> Harness:
        state_url = f"sqlite:///{tmp_path / 'state.db'}"
        routing, ledger = RoutingState.open(state_url), Ledger.open(state_url)
        request_log = RequestLog.open(state_url)
        spool = tmp_path / name / "spool"
        writer = RequestLogWriter(request_log, spool)
        writer.start()
        settings = TuneopsSettings(project_dir=tmp_path, tracking_uri=claims.tracking_uri)
        configured = provider_endpoints(LocalProviderConfig(base_url=base_url or stub.base_url), settings)
        gateway = Gateway(
            GatewayConfig(
                (MODEL,), serving=serving or ServingConfig(refresh_seconds=0.2), api_keys=api_keys, **config
            ),
            store=claims,
            routing=routing,
            ledger=ledger,
            request_log=request_log,
            writer=writer,
            endpoints={**configured, **(endpoints or {})},
        )
        harness = Harness(gateway, claims, routing, ledger, request_log, writer, state_url, spool)
        opened.append(harness)
        return harness

    yield build
    for harness in opened:
        harness.writer.close()
        harness.request_log.close()
        harness.routing.close()
        harness.ledger.close()


def run(coroutine: Any) -> Any:
    """Run one test coroutine (the suite has no asyncio plugin)."""
    return asyncio.run(coroutine)
