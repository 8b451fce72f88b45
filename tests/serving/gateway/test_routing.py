"""Traffic follows the registry: sticky splits, alias moves seen within a refresh, failover.

The split test drives the app in process (``ASGITransport``, real upstream stub over HTTP) to
send 15,000 requests quickly; the alias-move and failover tests go through uvicorn with the
official SDK, and move the alias with MLflow's own client, as the MLflow UI does.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.serving.gateway.conftest import MODEL, Harness, answer_by_model, run
from tuneops.providers import ProviderEndpoint
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.testing.chat_stub import running_chat_stub

QUESTION = [{"role": "user", "content": "Is hail damage covered?"}]


def binomial_interval(n: int, p: float, confidence: float = 0.99) -> tuple[int, int]:
    """The central ``confidence`` interval of Binomial(n, p), computed exactly."""
    tail = (1 - confidence) / 2
    log_choose = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in range(n + 1)]
    pmf = [math.exp(c + k * math.log(p) + (n - k) * math.log1p(-p)) for k, c in enumerate(log_choose)]
    low = high = 0
    total = 0.0
    for k, mass in enumerate(pmf):
        total += mass
        if total < tail:
            low = k + 1
        if total <= 1 - tail:
            high = k + 1
    return low, high


async def _arms(client: httpx.AsyncClient, users: list[str]) -> dict[str, str]:
    """Each user's arm (from the response header) for one request per user."""
    limit = asyncio.Semaphore(32)

    async def one(user: str) -> tuple[str, str]:
        async with limit:
            reply = await client.post(
                "/chat/completions", json={"model": MODEL, "messages": QUESTION, "user": user}
            )
        assert reply.status_code == 200, reply.text
        arm = reply.headers["x-tuneops-arm"]
        expected = {"champion": "1", "challenger": "2"}[arm]
        assert reply.headers["x-tuneops-model-version"] == expected
        assert reply.json()["choices"][0]["message"]["content"].startswith(f"v{expected} says")
        return user, arm

    return dict(await asyncio.gather(*(one(u) for u in users)))


@pytest.mark.slow
def test_sticky_split_of_5000_users(gateway_factory: Callable[..., Harness]) -> None:
    harness = gateway_factory()
    harness.routing.set_rollout(
        MODEL, challenger_version="2", weight=1000, experiment_id="exp-1", actor="test"
    )
    users = [f"user-{i}" for i in range(5000)]

    async def scenario() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        async with harness.running(), harness.asgi_client() as client:
            first = await _arms(client, users)
            again = await _arms(client, users)
            harness.routing.set_rollout(MODEL, challenger_version="2", weight=5000, actor="test")
            refreshed = await client.post("/routing/refresh")
            assert refreshed.json()["changed"] == [MODEL]
            raised = await _arms(client, users)
        return first, again, raised

    first, again, raised = run(scenario())
    challengers = {u for u, arm in first.items() if arm == "challenger"}
    low, high = binomial_interval(5000, 0.10)
    assert low <= len(challengers) <= high, (len(challengers), (low, high))
    assert again == first  # every user saw one arm throughout
    assert all(raised[u] == "challenger" for u in challengers)  # raising the weight moved nobody back
    low50, high50 = binomial_interval(5000, 0.50)
    assert low50 <= Counter(raised.values())["challenger"] <= high50
    rows = [r for r in harness.answers() if r.role == "answer"]
    assert len(rows) == 15_000 and len({r.request_id for r in rows}) == 15_000
    assert Counter(r.arm for r in rows[:5000])["challenger"] == len(challengers)


def mlflow_client(store: RegistryStore) -> object:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.registry_uri)


@pytest.mark.slow
def test_an_alias_moved_in_mlflow_moves_traffic_and_lands_in_the_ledger(
    gateway_factory: Callable[..., Harness],
) -> None:
    from tuneops.serving.gateway.app import ServingConfig

    harness = gateway_factory(serving=ServingConfig(refresh_seconds=2.0))  # the spec's default bound
    with harness.serve() as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        before = client.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION)
        assert before.headers["x-tuneops-model-version"] == "1"
        mlflow_client(harness.store).set_registered_model_alias(MODEL, "champion", "3")  # type: ignore[attr-defined]
        moved_at = time.monotonic()
        deadline = moved_at + 60  # a hang guard only: the refresh period (2 s) is what bounds this
        while True:
            reply = client.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION)
            if reply.headers["x-tuneops-model-version"] == "3":
                break
            assert time.monotonic() < deadline, "the alias move never reached the gateway"
            time.sleep(0.05)
        seen = time.monotonic() - moved_at
        for _ in range(20):  # from then on, every new request is served by the new champion
            reply = client.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION)
            assert reply.headers["x-tuneops-model-version"] == "3"
            assert reply.parse().choices[0].message.content.startswith("v3 says")
    print(f"alias move picked up after {seen:.2f} s")
    moves = [e for e in harness.ledger.history(MODEL) if e.alias == "champion"]
    assert (moves[-1].from_version, moves[-1].to_version, moves[-1].source) == ("1", "3", "gateway")
    snapshot = harness.routing.history(MODEL)[-1]
    assert (snapshot.champion, snapshot.challenger, snapshot.cause) == ("3", "2", "alias")


def _retag(store: RegistryStore, version: str, provider: str) -> None:
    mlflow_client(store).set_model_version_tag(MODEL, version, "tuneops.provider", provider)  # type: ignore[attr-defined]


@pytest.mark.slow
def test_challenger_upstream_stopped_mid_load_clients_see_no_error(
    gateway_factory: Callable[..., Harness], claims: RegistryStore
) -> None:
    # the challenger (v2) gets an upstream of its own, reached as provider "openai"
    with running_chat_stub(answer=answer_by_model) as challenger_stub:
        _retag(claims, "2", "openai")
        endpoint = ProviderEndpoint("openai", challenger_stub.base_url, "sk-test", "OPENAI_API_KEY")
        harness = gateway_factory(endpoints={"openai": endpoint})
        harness.routing.set_rollout(MODEL, challenger_version="2", weight=5000, actor="test")
        with harness.serve() as base_url:
            client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)

            def ask(i: int) -> tuple[str, str]:
                stream = i % 3 == 0
                raw = client.chat.completions.with_raw_response.create(
                    model=MODEL, messages=QUESTION, user=f"load-{i % 200}", stream=stream
                )
                parsed = raw.parse()
                text = (
                    "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
                    if stream
                    else parsed.choices[0].message.content
                )
                return raw.headers["x-tuneops-model-version"], text

            with ThreadPoolExecutor(8) as pool:
                before = list(pool.map(ask, range(200)))
                # the challenger's upstream goes away: new connections are refused, open ones fail
                challenger_stub.config.always_fail = lambda _model, _messages: True
                challenger_stub.server.shutdown()
                challenger_stub.server.server_close()
                after = list(pool.map(ask, range(200, 400)))
    assert {v for v, _ in before} == {"1", "2"}
    assert {v for v, _ in after} == {"1"}
    assert all(text.startswith(f"v{v} says") for v, text in before + after)
    rows = harness.answers()
    answers = [r for r in rows if r.role == "answer"]
    failovers = [r for r in rows if r.role == "failover"]
    assert len(answers) == 400 and all(r.status_code == 200 for r in answers)
    assert failovers and all((r.version, r.arm) == ("2", "challenger") for r in failovers)
    assert {r.error_kind for r in failovers} <= {"upstream_error", "upstream_unreachable"}
    failed_over = {r.request_id for r in failovers}
    assert all(r.version == "1" for r in answers if r.request_id in failed_over)
