"""The training loop itself: assistant-only labels, resume from a checkpoint, early stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneops.serving.local.chatdata import parse_chat_jsonl
from tuneops.serving.local.rules import Hyperparameters
from tuneops.serving.local.testing import as_jsonl, claims_chat_examples
from tuneops.serving.local.training import (
    IGNORE,
    TrainingCallbacks,
    TrainingCancelled,
    answer_loss,
    encode_example,
    latest_checkpoint,
    load_causal_lm,
    train_lora,
)

pytestmark = pytest.mark.slow


def _examples(n: int, seed: int):  # type: ignore[no-untyped-def]
    return parse_chat_jsonl(as_jsonl(claims_chat_examples(n, seed)))


def test_only_assistant_answers_and_their_end_marker_are_learned(tiny_test_model: Path) -> None:
    _, tokenizer = load_causal_lm(tiny_test_model)
    example = _examples(1, 0)[0]
    encoded = encode_example(tokenizer, example, 512)
    learned = tokenizer.decode(
        [i for i, label in zip(encoded.input_ids, encoded.labels, strict=True) if label != IGNORE]
    )
    assert learned == example[-1].content + "<|im_end|>\n"
    prompt = tokenizer.decode(
        [i for i, label in zip(encoded.input_ids, encoded.labels, strict=True) if label == IGNORE]
    )
    assert example[1].content in prompt and prompt.endswith("<|im_start|>assistant\n")
    assert len(encode_example(tokenizer, example, 20).input_ids) == 20


def test_resume_continues_from_the_newest_checkpoint(tiny_test_model: Path, tmp_path: Path) -> None:
    train, valid = _examples(24, 1), _examples(8, 2)
    events: list[str] = []
    callbacks = TrainingCallbacks(event=lambda message, data, kind: events.append(message))
    one = train_lora(
        tiny_test_model,
        train,
        valid,
        Hyperparameters(1, 4, 1.0),
        tmp_path,
        seed=1,
        base_learning_rate=1e-2,
        callbacks=callbacks,
    )
    assert one.resumed_from_epoch == 0 and one.base_valid_loss is not None and len(one.valid_losses) == 1
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "epoch-1"
    two = train_lora(
        tiny_test_model,
        train,
        valid,
        Hyperparameters(2, 4, 1.0),
        tmp_path,
        seed=1,
        base_learning_rate=1e-2,
        callbacks=callbacks,
    )
    assert (
        two.resumed_from_epoch == 1
        and two.valid_losses[0] == one.valid_losses[0]
        and len(two.valid_losses) == 2
    )
    assert [row["step"] for row in two.metrics_rows] == list(range(1, 13))
    assert any(m.startswith("Resumed from the checkpoint of epoch 1") for m in events)


def test_rising_validation_loss_stops_early_keeps_the_last_epoch_and_reports_the_best(
    tiny_test_model: Path, tmp_path: Path
) -> None:
    # A learning rate far too high makes validation loss climb after the first epoch.
    result = train_lora(
        tiny_test_model,
        _examples(24, 1),
        _examples(8, 2),
        Hyperparameters(6, 2, 40.0),
        tmp_path,
        seed=1,
        base_learning_rate=1e-2,
    )
    assert result.stopped_early and len(result.valid_losses) < 6
    assert result.final_epoch == len(result.valid_losses)
    assert result.valid_losses[result.best_epoch - 1] == min(result.valid_losses)
    assert result.best_epoch < result.final_epoch  # past its best: what a client's gate must see
    model, tokenizer = load_causal_lm(tiny_test_model)
    from peft import PeftModel

    # The job's model is the end of training (OpenAI's semantics) ...
    final = PeftModel.from_pretrained(model, result.adapter_dir)
    assert answer_loss(final, tokenizer, _examples(8, 2)) == pytest.approx(result.valid_losses[-1], rel=1e-4)
    # ... and the best epoch is still there, as its checkpoint.
    best = PeftModel.from_pretrained(
        load_causal_lm(tiny_test_model)[0], tmp_path / "checkpoints" / f"epoch-{result.best_epoch}"
    )
    assert answer_loss(best, tokenizer, _examples(8, 2)) == pytest.approx(min(result.valid_losses), rel=1e-4)


def test_cancel_stops_the_loop(tiny_test_model: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingCancelled):
        train_lora(
            tiny_test_model,
            _examples(12, 1),
            [],
            Hyperparameters(1, 4, 1.0),
            tmp_path,
            seed=1,
            base_learning_rate=1e-2,
            callbacks=TrainingCallbacks(cancelled=lambda: True),
        )
    assert latest_checkpoint(tmp_path) is None
