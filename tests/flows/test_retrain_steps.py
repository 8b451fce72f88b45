"""The retrain flow's glue: what the registered version records about its checkpoint and parent."""

from __future__ import annotations

import json

from tuneops.flows.retrain_steps import registration_request, training_at, training_tags
from tuneops.registry import conventions as c
from tuneops.registry.conventions import version_tags
from tuneops.registry.register import ParentModel
from tuneops.spec import Spec
from tuneops.tasks.data.types import DatasetVersion, SplitFile
from tuneops.tasks.evaluation.pipeline import EvaluationResult
from tuneops.tasks.evaluation.rules import GateDecision
from tuneops.tasks.evaluation.types import ModelSummary
from tuneops.tasks.finetune.checkpoints import analyse_training
from tuneops.tasks.finetune.types import Checkpoint, FineTuneJob, InferenceTarget, JobStatus

FINAL = "ft:tiny:tuneops:bot:abcd1234"


def report(*losses: float):
    points = [
        Checkpoint(step=4 * (i + 1), model=f"{FINAL}:ckpt-step-{4 * (i + 1)}", valid_loss=v)
        for i, v in enumerate(losses)
    ]
    return analyse_training(points, final_model=FINAL, epochs_requested=5, total_steps=20)


def test_the_final_model_past_its_best() -> None:
    tags = training_tags(report(2.0, 1.2, 1.5), FINAL)
    assert tags[c.TAG_CHECKPOINT] == "final"
    assert (tags[c.TAG_CHECKPOINT_STEP], tags[c.TAG_CHECKPOINT_EPOCH]) == ("12", "3")
    assert (tags[c.TAG_BEST_STEP], tags[c.TAG_BEST_EPOCH]) == ("8", "2")
    assert float(tags[c.TAG_VALIDATION_LOSS_RISE]) == 0.25
    assert tags[c.TAG_STOPPED_EARLY] == "true"  # 3 of 5 epochs
    assert tags[c.TAG_TRAINING].startswith("best epoch 2 (step 8)")


def test_a_registered_checkpoint_names_itself() -> None:
    tags = training_tags(report(2.0, 1.2, 1.5), f"{FINAL}:ckpt-step-8")
    assert tags[c.TAG_CHECKPOINT] == f"{FINAL}:ckpt-step-8" and tags[c.TAG_CHECKPOINT_STEP] == "8"
    assert float(tags[c.TAG_VALIDATION_LOSS_RISE]) == 0.0


def test_without_validation_loss_only_what_is_known() -> None:
    points = [Checkpoint(step=3, model=f"{FINAL}:ckpt-step-3")]
    tags = training_tags(analyse_training(points, final_model=FINAL, epochs_requested=None), FINAL)
    assert set(tags) == {c.TAG_TRAINING, c.TAG_CHECKPOINT, c.TAG_CHECKPOINT_STEP}


def test_on_azure_the_final_model_is_the_deployment() -> None:
    target = InferenceTarget("azure-openai", "https://x", "bot-1", api_version="2025-04-01-preview")
    moved = training_at(report(2.0, 1.2), target)
    assert moved.final_model == "bot-1" and moved.checkpoint_of("bot-1") == moved.final
    same = InferenceTarget("openai", "https://x", FINAL)
    assert training_at(report(2.0), same).final_model == FINAL


def test_the_version_records_the_winner_its_checkpoint_data_and_parent() -> None:
    spec = Spec.model_validate(
        {
            "model": {"name": "bot", "base_model": "tiny"},
            "data": {"train": "t.jsonl"},
            "finetune": {"from": "champion"},
        }
    )
    split = SplitFile(name="train", uri="file:///d/train.jsonl", sha256="a" * 64, rows=10, tokens=100)
    dataset = DatasetVersion(name="claims", digest="d" * 64, uri="file:///d", splits={"train": split})
    job = FineTuneJob(
        id="ftjob-1",
        status=JobStatus.SUCCEEDED,
        provider="local",
        model="ft:tiny:x:1",
        fine_tuned_model=FINAL,
    )
    winner = f"{FINAL}:ckpt-step-8"
    summary = ModelSummary("ckpt-step-8", winner, 1, {}, None, None, None, 0)
    evaluation = EvaluationResult(
        summaries={"ckpt-step-8": summary}, comparisons={}, decision=GateDecision(True, (), "ckpt-step-8"),
        dataset_digest="d" * 64, markdown="",
    )  # fmt: skip
    parent = ParentModel(
        model="ft:tiny:x:1",
        version="1",
        alias="champion",
        dataset="claims@" + "c" * 64,
        train_digest="b" * 64,
    )
    request = registration_request(
        spec, dataset, job, InferenceTarget("local", "http://s/v1", FINAL), evaluation,
        finetune_run_id="r", flow_run_id=None, training=report(2.0, 1.2, 1.5), parent=parent,
    )  # fmt: skip
    assert request.endpoint_model == winner
    tags = version_tags(request)
    assert tags[c.TAG_ENDPOINT_MODEL] == winner and tags[c.TAG_FINE_TUNED_MODEL] == FINAL
    assert tags[c.TAG_CHECKPOINT] == winner and tags[c.TAG_CHECKPOINT_STEP] == "8"
    assert tags[c.TAG_DATASET] == dataset.ref
    assert (tags[c.TAG_PARENT_VERSION], tags[c.TAG_PARENT_MODEL]) == ("1", "ft:tiny:x:1")
    assert (tags[c.TAG_PARENT_DATASET], tags[c.TAG_PARENT_TRAIN_DIGEST]) == ("claims@" + "c" * 64, "b" * 64)
    assert tags[c.TAG_BASE_MODEL] == "tiny"  # still compared with, and named as, the base model
    assert json.loads(tags[c.TAG_GATE_REASONS]) == []
