"""Lineage built from a realistic registry state: every link equals what the stages recorded."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from rich.console import Console

from tuneops.errors import UsageError, VersionNotFoundError
from tuneops.registry.conventions import ModelRef
from tuneops.registry.ledger import Ledger
from tuneops.registry.lineage import SCHEMA_VERSION, build_lineage
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.promotion import promote
from tuneops.registry.render import ledger_table, lineage_tree
from tuneops.tasks.data.store import open_store

from .conftest import mlflow_client

M = "support-bot"


def read_manifest(version_uri: str) -> dict[str, Any]:
    return dict(json.loads(open_store(version_uri).read_bytes("manifest.json")))


def test_lineage_of_the_champion_follows_every_link(
    build_version: Any, store: RegistryStore, ledger: Ledger
) -> None:
    built = build_version()
    promote(store, ledger, M, "1", "champion", reason="first release", actor="alice")
    lineage = build_lineage(store, ledger, ModelRef(M, alias="champion"), read_manifest=read_manifest)
    assert lineage.version == "1" and lineage.alias == "champion" and lineage.warnings == []
    ft = lineage.finetune
    assert (ft.job_id, ft.provider, ft.base_model) == ("ftjob-1", "local", "tiny-gpt2")
    assert ft.hyperparameters == {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 2.0}
    assert ft.trained_tokens == 1234 and ft.estimated_cost == pytest.approx(0.0123)
    assert ft.run_id == built.finetune_run_id and ft.run_metrics["train_loss"] == pytest.approx(0.42)
    ds = lineage.dataset
    assert ds.manifest_found and ds.digest == built.manifest["digest"] and ds.name == M
    assert {s.split: s.sha256 for s in ds.splits} == {
        k: v["sha256"] for k, v in built.manifest["splits"].items()
    }
    assert {s.split: s.rows for s in ds.splits} == {k: v["rows"] for k, v in built.manifest["splits"].items()}
    assert ds.rows == built.manifest["rows"] and ds.validation_report == built.manifest["validation_report"]
    assert all(s.uri and s.uri.startswith("file://") for s in ds.splits)
    ev = lineage.evaluation
    assert ev.run_id == built.eval_run_id
    assert ev.metrics == store.get_run(built.eval_run_id).metrics
    assert ev.gate == "passed" and ev.gate_reasons == ["f1 0.81 >= 0.6", "beats base by 0.29"]
    assert ev.by_model == {"base": {"f1": 0.52}, "candidate": {"f1": 0.81}, "champion": {"f1": 0.77}}
    assert ev.decision is not None and ev.decision["passed"] is True
    assert lineage.flow_run_id == built.request.flow_run_id
    assert [(e.alias, e.to_version, e.actor) for e in lineage.ledger] == [("champion", "1", "alice")]


def test_json_form_is_stable(build_version: Any, store: RegistryStore, ledger: Ledger) -> None:
    build_version()
    promote(store, ledger, M, "1", "challenger", reason="r")
    data = build_lineage(store, ledger, ModelRef(M, alias="challenger")).to_json_dict()
    assert data["schema_version"] == SCHEMA_VERSION
    assert set(data) == {
        "schema_version",
        "model",
        "ref",
        "alias",
        "at",
        "version",
        "version_aliases",
        "version_created_at",
        "description",
        "source",
        "registration_run_id",
        "finetune",
        "dataset",
        "evaluation",
        "flow_run_id",
        "ledger",
        "generated_at",
        "warnings",
        # added in schema 1 without a bump (an extension: nothing removed or changed); null unless
        # --at (routing) or --request (both) was asked
        "routing",
        "request",
        "trigger",  # why the retrain ran (drift: which check); an extension too
        "checkpoint",  # which checkpoint, best epoch, overfitting check; an extension too
        "parent",  # the version training continued from (finetune.from); an extension too
    }
    assert data["routing"] is None and data["request"] is None
    assert set(data["finetune"]) == {
        "job_id",
        "provider",
        "base_model",
        "endpoint_model",
        "endpoint_base_url",
        "hyperparameters",
        "trained_tokens",
        "estimated_cost",
        "run_id",
        "run_params",
        "run_metrics",
    }
    assert set(data["dataset"]) == {
        "name",
        "digest",
        "uri",
        "splits",
        "rows",
        "tokens",
        "validation_report",
        "manifest_found",
        "provenance",  # reviewed rows: synthetic counts, harvested request ids; an extension too
    }
    assert set(data["dataset"]["splits"][0]) == {"split", "sha256", "uri", "rows", "tokens"}
    assert set(data["evaluation"]) == {
        "run_id",
        "metrics",
        "gate",
        "gate_reasons",
        "run_tags",
        "by_model",
        "decision",
    }
    assert set(data["ledger"][0]) == {
        "id",
        "model",
        "alias",
        "from_version",
        "to_version",
        "actor",
        "reason",
        "source",
        "at",
        "intent_id",
    }
    assert data["ref"] == f"{M}@challenger" and data["ledger"][0]["at"].endswith("+00:00")


def test_at_answers_what_held_the_alias_then(
    build_version: Any, store: RegistryStore, ledger: Ledger
) -> None:
    build_version(job_id="j1")
    build_version(job_id="j2", seed="v2")
    promote(store, ledger, M, "1", "champion", reason="r1")
    promote(store, ledger, M, "2", "champion", reason="r2")
    first, second = ledger.history(M, "champion")
    between = first.at + (second.at - first.at) / 2
    assert build_lineage(store, ledger, ModelRef(M, "champion"), at=between).version == "1"
    assert build_lineage(store, ledger, ModelRef(M, "champion"), at=second.at).version == "2"
    assert build_lineage(store, ledger, ModelRef(M), at=second.at + timedelta(days=1)).finetune.job_id == "j2"
    with pytest.raises(VersionNotFoundError, match="was not set"):
        build_lineage(store, ledger, ModelRef(M, "champion"), at=first.at - timedelta(seconds=1))
    with pytest.raises(UsageError):
        build_lineage(store, ledger, ModelRef(M, version="1"), at=second.at)


def test_by_version_shows_the_ledger_rows_that_touch_it(
    build_version: Any, store: RegistryStore, ledger: Ledger
) -> None:
    build_version(job_id="j1")
    build_version(job_id="j2", seed="v2")
    promote(store, ledger, M, "1", "champion", reason="r1")
    promote(store, ledger, M, "2", "champion", reason="r2")
    lineage = build_lineage(store, ledger, ModelRef(M, version="1"))
    assert lineage.alias is None and lineage.version_aliases == ["previous"]
    assert {(e.alias, e.from_version, e.to_version) for e in lineage.ledger} == {
        ("champion", None, "1"),
        ("champion", "1", "2"),
        ("previous", None, "1"),
    }


def test_unreachable_links_become_warnings_not_failures(
    build_version: Any, store: RegistryStore, ledger: Ledger
) -> None:
    built = build_version()
    mlflow_client(store).delete_run(built.eval_run_id)
    store.set_alias(M, "champion", "1")

    def unreachable(uri: str) -> dict[str, Any]:
        from tuneops.errors import StoreError

        raise StoreError(f"{uri}: connection refused")

    lineage = build_lineage(store, ledger, ModelRef(M), read_manifest=unreachable)
    assert not lineage.dataset.manifest_found
    assert lineage.dataset.splits[0].rows == 20  # from the run inputs instead
    assert lineage.evaluation.gate == "passed"  # from the version tag
    assert any("manifest" in w for w in lineage.warnings)


def test_an_unset_alias_is_a_clear_error(build_version: Any, store: RegistryStore, ledger: Ledger) -> None:
    build_version()
    with pytest.raises(VersionNotFoundError, match="support-bot@champion is not set"):
        build_lineage(store, ledger, ModelRef(M, "champion"))


def test_rendering_shows_the_chain(build_version: Any, store: RegistryStore, ledger: Ledger) -> None:
    build_version()
    promote(store, ledger, M, "1", "champion", reason="first release")
    lineage = build_lineage(store, ledger, ModelRef(M, "champion"), read_manifest=read_manifest)
    console = Console(width=200, record=True)
    console.print(
        lineage_tree(lineage, mlflow_ui_url="http://127.0.0.1:5000", prefect_ui_url="http://p:4200")
    )
    console.print(ledger_table(M, ledger.history(M)))
    text = console.export_text()
    for expected in (
        "ftjob-1",
        "tiny-gpt2",
        "n_epochs=3",
        "gate: passed",
        "first release",
        lineage.dataset.digest[:12],
        "http://127.0.0.1:5000/#/models/support-bot/versions/1",
        "/runs/flow-run/",
    ):
        assert expected in text


def test_gate_reasons_fall_back_to_the_decision_artifact(
    build_version: Any, store: RegistryStore, ledger: Ledger
) -> None:
    built = build_version()
    mlflow_client(store).delete_model_version_tag(M, "1", "tuneops.gate_reasons")
    mlflow_client(store).delete_model_version_tag(M, "1", "tuneops.gate")
    mlflow_client(store).delete_tag(built.eval_run_id, "tuneops.gate")
    lineage = build_lineage(store, ledger, ModelRef(M, version="1"))
    assert lineage.evaluation.gate == "passed" and lineage.evaluation.gate_reasons == ["f1 0.81 >= 0.6"]


ROUTING_KEYS = {"at", "since", "cause", "champion", "challenger", "weight", "strategy", "experiment_id",
                "shares", "actor", "reason"}  # fmt: skip
REQUEST_KEYS = {"request_id", "at", "model", "version", "arm", "status_code", "weight", "share",
                "user_key_hash", "feedback_score", "attempts"}  # fmt: skip
ATTEMPT_KEYS = {"role", "at", "version", "arm", "status_code", "error_kind", "latency_ms", "ttft_ms",
                "streamed"}  # fmt: skip


def _served(request_id: str, at: Any, version: str, arm: str, role: str = "answer", status: int = 200) -> Any:
    from tuneops.requestlog import RequestRecord

    return RequestRecord(
        request_id=request_id, model=M, at=at, status_code=status, latency_ms=51.0, role=role,  # type: ignore[arg-type]
        version=version, arm=arm, user_key_hash="h" * 64, prompt_chars=5, response_chars=7,
        error_kind=None if status == 200 else "upstream_error",
    )  # fmt: skip


def test_routing_at_t_and_the_request_that_a_split_served(
    build_version: Any, store: RegistryStore, ledger: Ledger, tmp_path: Any
) -> None:
    """Routing history and request log as the gateway writes them; lineage reads both back."""
    from datetime import UTC, datetime

    from tuneops.registry.lineage import build_request_lineage
    from tuneops.requestlog import RequestLog, insert_records
    from tuneops.routing_state import RoutingState

    build_version(job_id="j1")
    build_version(job_id="j2", seed="v2")
    promote(store, ledger, M, "1", "champion", reason="r")
    promote(store, ledger, M, "2", "challenger", reason="r")
    url = f"sqlite:///{tmp_path / 'state.db'}"
    routing, requests = RoutingState.open(url), RequestLog.open(url)
    t0 = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)  # after the promotions
    routing.observe_aliases(M, "1", "2", actor="gateway", at=t0)
    routing.set_rollout(M, challenger_version="2", weight=1000, experiment_id="e1", actor="rollout",
                        reason="canary 10%", at=t0 + timedelta(minutes=1))  # fmt: skip
    routing.set_rollout(
        M, challenger_version="2", weight=5000, actor="rollout", at=t0 + timedelta(minutes=10)
    )
    with requests.engine.begin() as conn:
        insert_records(
            conn,
            [
                _served("r-challenger", t0 + timedelta(minutes=2), "2", "challenger"),
                _served("r-failover", t0 + timedelta(minutes=3), "2", "challenger", "failover", 502),
                _served("r-failover", t0 + timedelta(minutes=3), "1", "champion"),
                _served("r-pinned", t0 + timedelta(minutes=4), "2", "pinned"),
            ],
        )
    try:
        before = build_lineage(
            store, ledger, ModelRef(M), at=t0 - timedelta(seconds=1), routing_state=routing
        )
        assert before.routing is None and any("no routing recorded" in w for w in before.warnings)
        inside = build_lineage(
            store, ledger, ModelRef(M), at=t0 + timedelta(minutes=5), routing_state=routing
        )
        assert inside.routing is not None and inside.routing.shares == {"1": 0.9, "2": 0.1}
        data = inside.to_json_dict()
        assert set(data["routing"]) == ROUTING_KEYS and data["request"] is None
        assert (
            data["routing"]["weight"] == 1000
            and data["routing"]["since"] == (t0 + timedelta(minutes=1)).isoformat()
        )

        served = build_request_lineage(store, ledger, requests, routing, "r-challenger")
        assert served.request is not None and served.version == "2" and served.request.arm == "challenger"
        assert served.request.weight == 1000 and served.request.share == pytest.approx(0.1)
        assert served.finetune.job_id == "j2" and served.alias is None and served.at is None
        data = served.to_json_dict()
        assert set(data["request"]) == REQUEST_KEYS and set(data["routing"]) == ROUTING_KEYS
        assert set(data["request"]["attempts"][0]) == ATTEMPT_KEYS

        failover = build_request_lineage(store, ledger, requests, routing, "r-failover")
        assert failover.request is not None and failover.version == "1"
        assert (failover.request.arm, failover.request.share) == ("champion", pytest.approx(0.9))
        assert [(a.role, a.version, a.status_code) for a in failover.request.attempts] == [
            ("failover", "2", 502),
            ("answer", "1", 200),
        ]
        pinned = build_request_lineage(store, ledger, requests, routing, "r-pinned")
        assert pinned.request is not None and pinned.request.share is None and pinned.request.weight == 1000
        console = Console(width=200, record=True)
        with console.capture() as captured:
            console.print(lineage_tree(failover))
        text = captured.get()
        assert "answered by version 1 (arm champion, share then 90%" in text
        assert "failover: version 2 arm challenger status 502" in text
        with pytest.raises(UsageError, match="not in the request log"):
            build_request_lineage(store, ledger, requests, routing, "r-missing")
    finally:
        routing.close()
        requests.close()


def test_a_continued_fine_tune_names_its_parent_and_its_checkpoint(
    build_version: Any, store: RegistryStore, ledger: Ledger
) -> None:
    from tuneops.registry import conventions as c
    from tuneops.registry.register import ParentModel, resolve_parent

    first = build_version()
    client = mlflow_client(store)
    client.set_model_version_tag(M, "1", c.TAG_DATASET, f"{M}@{first.manifest['digest']}")
    promote(store, ledger, M, "1", "champion", reason="first release", actor="alice")
    parent = resolve_parent(store, M, "champion")
    assert parent == ParentModel(
        model="ft:tiny-gpt2:ftjob-1",
        version="1",
        alias="champion",
        dataset=f"{M}@{first.manifest['digest']}",
        train_digest=first.request.digest("train"),
    )
    assert resolve_parent(store, M, "ft:tiny-gpt2:ftjob-1").version == "1"  # an explicit id is found too
    assert resolve_parent(store, M, "ft:elsewhere:x") == ParentModel(model="ft:elsewhere:x")
    with pytest.raises(VersionNotFoundError, match=r"finetune\.from: challenger, but support-bot@challenger"):
        resolve_parent(store, M, "challenger")

    build_version(job_id="ftjob-2", seed="v2")
    tags = {
        **parent.tags(),
        c.TAG_CHECKPOINT: "final",
        c.TAG_CHECKPOINT_STEP: "12",
        c.TAG_CHECKPOINT_EPOCH: "3",
        c.TAG_BEST_EPOCH: "2",
        c.TAG_BEST_STEP: "8",
        c.TAG_STOPPED_EARLY: "false",
        c.TAG_VALIDATION_LOSS_RISE: "0.25",
        c.TAG_TRAINING: "best epoch 2 (step 8) validation loss 1.2; final epoch 3 (step 12) ...",
    }
    for key, value in tags.items():
        client.set_model_version_tag(M, "2", key, value)
    lineage = build_lineage(store, ledger, ModelRef(M, version="2"))
    assert lineage.parent is not None
    assert (lineage.parent.version, lineage.parent.model) == ("1", "ft:tiny-gpt2:ftjob-1")
    assert lineage.parent.train_digest == first.request.digest("train")
    ck = lineage.checkpoint
    assert ck is not None and (ck.checkpoint, ck.step, ck.epoch, ck.best_epoch) == ("final", 12, 3, 2)
    assert ck.stopped_early is False and ck.validation_loss_rise == 0.25
    data = lineage.to_json_dict()
    assert data["parent"]["version"] == "1" and data["checkpoint"]["best_epoch"] == 2
    console = Console(record=True, width=200)
    console.print(lineage_tree(lineage))
    text = console.export_text()
    assert "continued from version 1 (ft:tiny-gpt2:ftjob-1)" in text
    assert "checkpoint: final (epoch 3, step 12)" in text
    assert (
        "best: epoch 2 (step 8)  stopped early: no  overfitting check: validation loss +25.0% vs best" in text
    )
    assert f"tuneops lineage {M}/1" in text
    base_only = build_lineage(store, ledger, ModelRef(M, version="1"))
    assert base_only.parent is None and base_only.checkpoint is None
