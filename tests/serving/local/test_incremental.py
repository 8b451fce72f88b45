"""Incremental fine-tuning: a job whose model is a fine-tune (or a checkpoint) of this service
continues that adapter on new data, on the same root base model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tuneops.serving.local.service import LocalService, ServiceConfig
from tuneops.serving.local.testing import as_jsonl, claims_chat_examples

pytestmark = pytest.mark.slow


def _losses(service: LocalService, job_id: str) -> tuple[float, list[float]]:
    """(starting validation loss, one per epoch) as the job's events report them."""
    events = reversed(service.list_events(job_id, after=None, limit=1000)["data"])
    reported = [e["data"] for e in events if e["type"] == "metrics" and "valid_loss" in e["data"]]
    assert reported[0].get("base_model") is True
    return reported[0]["valid_loss"], [r["valid_loss"] for r in reported[1:]]


def _run(service: LocalService, body: dict[str, Any]) -> dict[str, Any]:
    job = service.create_job(body)
    service.run_job(job["id"])  # the worker's step, run here synchronously
    done = service.get_job(job["id"])
    assert done["status"] == "succeeded", done["error"]
    return done


def test_a_job_on_a_fine_tune_continues_its_adapter(tmp_path: Path, tiny_test_model: Path) -> None:
    service = LocalService(ServiceConfig(home=tmp_path / "models", base_model_dirs=(tiny_test_model,)))
    try:
        first = service.create_file("a.jsonl", "fine-tune", as_jsonl(claims_chat_examples(24, seed=1)))["id"]
        new = service.create_file("b.jsonl", "fine-tune", as_jsonl(claims_chat_examples(24, seed=3)))["id"]
        valid = service.create_file("v.jsonl", "fine-tune", as_jsonl(claims_chat_examples(8, seed=2)))["id"]
        hyper = {"n_epochs": 2, "batch_size": 4}
        parent = _run(
            service,
            {
                "model": "tuneops-tiny",
                "training_file": first,
                "validation_file": valid,
                "hyperparameters": hyper,
            },
        )
        parent_base, parent_epochs = _losses(service, parent["id"])
        assert parent_epochs[-1] < parent_base - 0.2  # the parent learned something to continue from

        child = _run(
            service,
            {
                "model": parent["fine_tuned_model"],
                "training_file": new,
                "validation_file": valid,
                "suffix": "more",
                "hyperparameters": hyper,
            },
        )
        assert child["model"] == parent["fine_tuned_model"]
        assert child["fine_tuned_model"].startswith("ft:tuneops-tiny:tuneops:more:")  # the root base
        child_start, child_epochs = _losses(service, child["id"])
        # It starts where the parent ended (its final weights), not from the base model.
        assert child_start == pytest.approx(parent_epochs[-1], rel=1e-4)
        assert abs(child_start - parent_base) > 0.2
        base_dir, adapter = service.resolve_model(child["fine_tuned_model"])
        assert base_dir == tiny_test_model.resolve() and adapter is not None
        assert len(child_epochs) >= 1

        # A checkpoint is a starting point too: the parent's first epoch.
        first_checkpoint = service.list_checkpoints(parent["id"], after=None, limit=10)["data"][-1]
        from_checkpoint = _run(
            service,
            {
                "model": first_checkpoint["fine_tuned_model_checkpoint"],
                "training_file": new,
                "validation_file": valid,
                "hyperparameters": {"n_epochs": 1, "batch_size": 4},
            },
        )
        start, _ = _losses(service, from_checkpoint["id"])
        assert start == pytest.approx(parent_epochs[0], rel=1e-4)
        assert from_checkpoint["fine_tuned_model"].startswith("ft:tuneops-tiny:tuneops::")
    finally:
        service.store.close()
