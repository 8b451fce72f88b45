"""The run half of the MLflow adapter against a real SQLite MLflow store: batches, artifacts,
metric history, dataset inputs (moved here from the data stage with ``log_dataset_inputs``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure

from tuneops.errors import RegistryError, VersionNotFoundError
from tuneops.registry.mlflow_store import RegistryStore
from tuneops.registry.tracking import (
    MAX_METRICS_PER_BATCH,
    MetricPoint,
    RunTracker,
    mlflow_digest,
    registration_inputs,
    stage_inputs,
)
from tuneops.tasks.data.store import LocalStore
from tuneops.tasks.data.tracking import links_from_version
from tuneops.tasks.data.version import DatasetSources, version_files

from .conftest import mlflow_client


def write_jsonl(path: Path, rows: int) -> Path:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"claim {i}?"},
                    {"role": "assistant", "content": "ok."},
                ]
            }
        )
        for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def tracker(store: RegistryStore) -> RunTracker:
    return RunTracker(store)


def test_splits_logged_as_run_inputs_with_manifest(tmp_path: Path, tracker: RunTracker) -> None:
    version = version_files(
        DatasetSources(write_jsonl(tmp_path / "train.jsonl", 60)),
        name="claims",
        store=LocalStore(tmp_path / "store"),
        home=tmp_path / "home",
    )
    run_id = tracker.start_run("data-lineage", "finetune-x")
    tracker.log_dataset_inputs(run_id, stage_inputs(links_from_version(version)))
    tracker.log_manifest(run_id, version.name, version.manifest)
    client = mlflow_client(tracker.store)
    inputs = client.get_run(run_id).inputs.dataset_inputs
    by_context = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i for i in inputs}
    assert set(by_context) == set(version.splits)
    train = by_context["train"]
    assert train.dataset.name == "claims"
    assert train.dataset.digest == mlflow_digest(version.splits["train"].sha256)
    assert version.splits["train"].uri in train.dataset.source
    assert {t.key: t.value for t in train.tags} == {
        "mlflow.data.context": "train",
        "tuneops.sha256": version.splits["train"].sha256,
        "tuneops.version_digest": version.digest,
        "tuneops.rows": str(version.splits["train"].rows),
        "tuneops.tokens": str(version.splits["train"].tokens),
    }
    experiment = client.get_experiment_by_name("data-lineage").experiment_id
    found = client.search_runs(
        [experiment], filter_string=f"dataset.digest = '{mlflow_digest(version.splits['test'].sha256)}'"
    )
    assert [r.info.run_id for r in found] == [run_id]
    artifacts = [a.path for a in client.list_artifacts(run_id, "datasets/claims")]
    assert artifacts == ["datasets/claims/manifest.json"]
    logged = tracker.store.load_json_artifact(run_id, "datasets/claims/manifest.json")
    assert logged == json.loads(json.dumps(version.manifest))


def test_registration_layout_names_each_split_and_keeps_where_the_version_lives(tmp_path: Path) -> None:
    version = version_files(
        DatasetSources(write_jsonl(tmp_path / "train.jsonl", 40)),
        name="claims",
        store=LocalStore(tmp_path / "store"),
        home=tmp_path / "home",
    )
    by_split = {i.tags["tuneops.split"]: i for i in registration_inputs(links_from_version(version))}
    assert by_split["train"].name == "claims-train" and by_split["train"].context == "training"
    assert by_split["test"].context == "testing"
    assert by_split["train"].tags["tuneops.version_uri"] == version.uri


def test_metrics_go_in_batches_of_at_most_1000(tracker: RunTracker, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = tracker.start_run("batches", "many-metrics")
    calls: list[int] = []
    real = tracker._client.log_batch

    def counting(run: str, **kwargs: Any) -> None:
        calls.append(len(kwargs.get("metrics") or []))
        real(run, **kwargs)

    monkeypatch.setattr(tracker._client, "log_batch", counting)
    points = [MetricPoint("loss", 1.0 / (i + 1), step=i) for i in range(2 * MAX_METRICS_PER_BATCH + 5)]
    tracker.log_batch(run_id, params={"long": "x" * 7000}, metrics=points, tags={"t": "1"})
    tracker.log_batch(run_id)  # nothing to log: no call
    assert calls == [1000, 1000, 5]
    history = tracker.metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == list(range(2 * MAX_METRICS_PER_BATCH + 5))
    assert len(tracker.params(run_id)["long"]) == 6000
    assert tracker.store.get_run(run_id).tags["t"] == "1"


def test_artifacts_of_every_kind_land_under_their_paths(tracker: RunTracker) -> None:
    run_id = tracker.start_run("artifacts", "evaluate-x")
    figure = Figure(figsize=(2, 2))
    figure.add_subplot().plot([0, 1], [1, 0])
    tracker.log_bytes(run_id, b"\x89PNG fake", "finetune/loss_curve.png")
    tracker.log_text(run_id, "# hi", "evaluation/summary.md")
    tracker.log_dict(run_id, {"passed": True}, "evaluation/decision.json")
    tracker.log_table(run_id, {"row": [0, 1], "score": [0.5, 1.0]}, "evaluation/rows.json")
    tracker.log_figure(run_id, figure, "evaluation/comparison.png")
    tracker.finish_run(run_id)
    client = mlflow_client(tracker.store)
    paths = {a.path for folder in ("finetune", "evaluation") for a in client.list_artifacts(run_id, folder)}
    assert paths == {
        "finetune/loss_curve.png",
        "evaluation/summary.md",
        "evaluation/decision.json",
        "evaluation/rows.json",
        "evaluation/comparison.png",
    }
    assert tracker.store.load_json_artifact(run_id, "evaluation/decision.json") == {"passed": True}
    assert tracker.store.get_run(run_id).status == "FINISHED"


def test_a_run_is_found_by_its_key_before_another_is_started(tracker: RunTracker) -> None:
    first, created = tracker.find_or_start_run("support-bot", "finetune-j1", key={"tuneops.job_id": "j1"})
    again, created_again = tracker.find_or_start_run(
        "support-bot", "finetune-j1", key={"tuneops.job_id": "j1"}, tags={"extra": "x"}
    )
    assert created and not created_again and again == first


def test_mlflow_failures_become_registry_errors(tracker: RunTracker) -> None:
    with pytest.raises(VersionNotFoundError):
        tracker.params("0" * 32)
    with pytest.raises(RegistryError):
        tracker.log_batch("0" * 32, tags={"a": "b"})


def test_the_active_run_counts_only_in_its_own_store(tracker: RunTracker, tmp_path: Path) -> None:
    import mlflow

    experiment = tracker.store.ensure_experiment("active")
    with mlflow.start_run(experiment_id=experiment) as run:
        assert tracker.active_run_id() == run.info.run_id
        elsewhere = RunTracker.open(f"sqlite:///{tmp_path / 'other.db'}")
        assert elsewhere.active_run_id() is None
    assert tracker.active_run_id() is None
