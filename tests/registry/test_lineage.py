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
    }
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
