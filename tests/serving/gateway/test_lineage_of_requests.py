"""``tuneops lineage --request`` / ``--at`` over traffic the real gateway served during a 90/10 split.

The gateway writes the request log and the routing history; lineage (registry) reads them back:
a request names the version and arm that answered it (as the response headers said) and the
weight then, and ``--at T`` inside the split shows both versions with their shares.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from tests.serving.gateway.conftest import MODEL, Harness, run
from tuneops.errors import UsageError
from tuneops.registry.conventions import ModelRef
from tuneops.registry.lineage import build_lineage, build_request_lineage
from tuneops.registry.render import lineage_tree

QUESTION = [{"role": "user", "content": "Is hail damage covered?"}]


def test_requests_during_a_90_10_split_name_their_version_arm_and_weight(
    gateway_factory: Callable[..., Harness],
) -> None:
    harness = gateway_factory()
    harness.routing.set_rollout(MODEL, challenger_version="2", weight=1000, experiment_id="exp-9", actor="t")

    async def scenario() -> tuple[dict[str, tuple[str, str]], datetime, dict[str, tuple[str, str]]]:
        async with harness.running(), harness.asgi_client() as client:

            async def send(user: str) -> tuple[str, tuple[str, str]]:
                reply = await client.post(
                    "/chat/completions", json={"model": MODEL, "messages": QUESTION, "user": user}
                )
                assert reply.status_code == 200, reply.text
                h = reply.headers
                return h["x-request-id"], (h["x-tuneops-model-version"], h["x-tuneops-arm"])

            split = dict(await asyncio.gather(*(send(f"user-{i}") for i in range(300))))
            inside = datetime.now(UTC)
            harness.routing.set_rollout(MODEL, challenger_version="2", weight=5000, actor="t")
            assert (await client.post("/routing/refresh")).status_code == 200
            later = dict(await asyncio.gather(*(send(f"user-{i}") for i in range(40))))
        return split, inside, later

    split, inside, later = run(scenario())
    assert harness.writer.flush(30)
    arms = set(split.values())
    assert arms == {("1", "champion"), ("2", "challenger")}
    for wanted in (("1", "champion"), ("2", "challenger")):
        request_id = next(rid for rid, served in split.items() if served == wanted)
        lineage = build_request_lineage(
            harness.store, harness.ledger, harness.request_log, harness.routing, request_id
        )
        request = lineage.request
        assert request is not None and (request.version, request.arm) == wanted
        assert lineage.version == wanted[0] and lineage.ref == f"{MODEL}/{wanted[0]}"
        assert request.weight == 1000
        assert request.share == pytest.approx(0.1 if wanted[1] == "challenger" else 0.9)
        assert [a.role for a in request.attempts] == ["answer"] and request.status_code == 200
        data = lineage.to_json_dict()
        assert data["request"]["request_id"] == request_id and data["request"]["arm"] == wanted[1]
        assert data["routing"]["shares"] == {"1": pytest.approx(0.9), "2": pytest.approx(0.1)}
        text = _render(lineage)
        assert f"request {request_id}" in text and f"answered by version {wanted[0]}" in text
    # a challenger request after the raise carries the new weight
    raised = next(rid for rid, served in later.items() if served[1] == "challenger")
    after = build_request_lineage(harness.store, harness.ledger, harness.request_log, harness.routing, raised)
    assert after.request is not None and after.request.weight == 5000
    assert after.request.share == pytest.approx(0.5)

    at_split = build_lineage(
        harness.store, harness.ledger, ModelRef(MODEL), at=inside, routing_state=harness.routing
    )
    routing = at_split.routing
    assert routing is not None and at_split.version == "1"
    assert (routing.champion, routing.challenger, routing.weight) == ("1", "2", 1000)
    assert routing.shares == {"1": pytest.approx(0.9), "2": pytest.approx(0.1)}
    assert routing.experiment_id == "exp-9"
    text = _render(at_split)
    assert "version 1: 90%" in text and "version 2: 10%" in text
    now = build_lineage(
        harness.store, harness.ledger, ModelRef(MODEL), at=datetime.now(UTC), routing_state=harness.routing
    )
    assert now.routing is not None and now.routing.shares == {"1": 0.5, "2": 0.5}


def test_unknown_request_is_a_usage_error(gateway_factory: Callable[..., Harness]) -> None:
    harness = gateway_factory()
    with pytest.raises(UsageError, match="not in the request log"):
        build_request_lineage(harness.store, harness.ledger, harness.request_log, harness.routing, "nope")


def _render(lineage: object) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, file=None)
    with console.capture() as captured:
        console.print(lineage_tree(lineage))  # type: ignore[arg-type]
    return captured.get()
