"""Acceptance on the project's example dataset: the fine-tune beats the base on held-out data.

The service reports validation loss through job events; the test re-computes both losses itself
from the files the service wrote (base folder, adapter folder), so it checks training, not a
number the service could have made up.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from openai import OpenAI

from tuneops.serving.local.chatdata import parse_chat_jsonl
from tuneops.serving.local.launcher import ServiceProcess

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "claims"


@pytest.mark.skipif(not (EXAMPLES / "validation.jsonl").is_file(), reason="examples/claims not present")
def test_fine_tuned_validation_loss_is_lower_than_the_base(
    local_service: ServiceProcess, tiny_test_model: Path
) -> None:
    from peft import PeftModel

    from tuneops.serving.local.training import answer_loss, load_causal_lm

    client = OpenAI(base_url=local_service.base_url, api_key="unused", max_retries=0)
    train_lines = (EXAMPLES / "train.jsonl").read_bytes().splitlines()[:96]  # a subset keeps the test short
    validation = (EXAMPLES / "validation.jsonl").read_bytes()
    train = client.files.create(file=("train.jsonl", b"\n".join(train_lines) + b"\n"), purpose="fine-tune")
    held_out = client.files.create(file=("validation.jsonl", validation), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tuneops-tiny",
        training_file=train.id,
        validation_file=held_out.id,
        suffix="claims",
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 2, "batch_size": 4, "lora_r": 8, "lora_alpha": 16}
            },
        },
    )
    deadline = time.monotonic() + 300
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.25)
    assert job.status == "succeeded", job.error

    reported = [
        e.data
        for e in reversed(list(client.fine_tuning.jobs.list_events(job.id, limit=100)))
        if e.type == "metrics" and "valid_loss" in (e.data or {})
    ]
    # the job's model is the last epoch's adapter (OpenAI's fine_tuned_model), whatever the best was
    base_reported, tuned_reported = reported[0]["valid_loss"], reported[-1]["valid_loss"]
    assert tuned_reported < base_reported - 0.1, (base_reported, tuned_reported)

    examples = parse_chat_jsonl(validation)
    base, tokenizer = load_causal_lm(tiny_test_model)
    base_loss = answer_loss(base, tokenizer, examples)
    adapter = local_service.home / "jobs" / job.id / "adapter"
    tuned = PeftModel.from_pretrained(load_causal_lm(tiny_test_model)[0], adapter)
    tuned_loss = answer_loss(tuned, tokenizer, examples)
    assert base_loss == pytest.approx(base_reported, rel=1e-3)
    assert tuned_loss == pytest.approx(tuned_reported, rel=1e-3)
    assert tuned_loss < base_loss - 0.1
