"""LoRA fine-tuning of a Hugging Face causal LM on chat data, in a raw PyTorch loop.

Why a raw loop and not ``transformers.Trainer``: on the small CPU models this service is mostly
used with, the Trainer's per-step overhead is ~10x the step itself. The loop keeps what matters:
loss on assistant tokens only (rendered with the model's own chat template), validation loss on
the base model before training and after every epoch, early stop when validation loss stops
improving, and a checkpoint per epoch that holds everything needed to resume after a crash
(adapter, optimizer, scheduler, history).

The job's model is the adapter at the end of training (the last epoch trained, also after an
early stop), as OpenAI's ``fine_tuned_model`` is; the best epoch by validation loss is reported
and stays callable as its checkpoint, so choosing it is the client's decision, not a silent one.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneops.serving.local.chatdata import Example, as_dicts
from tuneops.serving.local.rules import Hyperparameters, best_epoch, should_stop_early, steps_per_epoch
from tuneops.serving.local.tinymodel import CHATML_TEMPLATE

IGNORE = -100
STATE_FILE = "trainer_state.pt"


class TrainingCancelled(Exception):
    """Raised inside the loop when the job was cancelled; nothing is saved after it."""


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def render(tokenizer: Any, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool) -> str:
    """The chat as the model sees it: its own template, or ChatML when it has none."""
    template = getattr(tokenizer, "chat_template", None) or CHATML_TEMPLATE
    return tokenizer.apply_chat_template(
        list(messages), chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def chat_segments(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[tuple[str, bool]]:
    """Cut the rendered chat into (text, is_assistant_answer) pieces.

    Each assistant answer is the text that rendering message ``i`` adds after the generation
    prompt for it, so the learned part ends with whatever end-of-turn marker the template writes
    (the model learns to stop).
    """
    segments: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:i], add_generation_prompt=True)
        full = render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ValueError("the chat template does not render conversations incrementally")
        segments.append((prompt[len(done) :], False))
        segments.append((full[len(prompt) :], True))
        done = full
    whole = render(tokenizer, messages, add_generation_prompt=False)
    if len(whole) > len(done) and whole.startswith(done):
        segments.append((whole[len(done) :], False))
    return [(text, learn) for text, learn in segments if text]


def encode_example(tokenizer: Any, example: Example, max_length: int) -> Encoded:
    """Token ids and labels (assistant answers only, everything else ``-100``), cut to ``max_length``."""
    ids: list[int] = []
    labels: list[int] = []
    for text, learn in chat_segments(tokenizer, as_dicts(example)):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        labels.extend(piece if learn else [IGNORE] * len(piece))
    return Encoded(ids[:max_length], labels[:max_length])


def context_length(model: Any) -> int:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def _batch_tensors(batch: Sequence[Encoded], pad_id: int, device: Any) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def batch_loss(model: Any, batch: Sequence[Encoded], pad_id: int, device: Any) -> tuple[Any, int, int]:
    """Summed cross-entropy over answer tokens, the number of them, and how many were predicted right."""
    import torch

    ids, labels, mask = _batch_tensors(batch, pad_id, device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1, :]
    target = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), target.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    counted = target != IGNORE
    correct = int(((logits.argmax(-1) == target) & counted).sum())
    return loss, int(counted.sum()), correct


def evaluate(
    model: Any, examples: Sequence[Encoded], pad_id: int, device: Any, batch_size: int = 16
) -> tuple[float, float]:
    """Mean loss and token accuracy per answer token over ``examples``."""
    import torch

    was_training = model.training
    model.eval()
    total = tokens = correct = 0.0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            loss, n, right = batch_loss(model, examples[start : start + batch_size], pad_id, device)
            total += float(loss)
            tokens += n
            correct += right
    if was_training:
        model.train()
    return (total / tokens if tokens else float("nan")), (correct / tokens if tokens else float("nan"))


def load_causal_lm(model_dir: Path) -> tuple[Any, Any]:
    """A base model and its tokenizer from a local folder, never from the network."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def lora_config(model: Any, hp: Hyperparameters) -> Any:
    """LoRA on the requested modules, or on every linear layer when the model has none of them."""
    from peft import LoraConfig

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets: Any = [t for t in hp.lora_target_modules if t in names] or "all-linear"
    return LoraConfig(
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=targets,
        fan_in_fan_out=getattr(model.config, "model_type", "") == "gpt2",
        task_type="CAUSAL_LM",
    )


@dataclass
class TrainingCallbacks:
    """How the loop reports to the job (events, checkpoints) and learns of a cancel."""

    event: Callable[[str, dict[str, Any] | None, str], None] = lambda message, data, kind: None
    checkpoint: Callable[[int, int, dict[str, float], Path], None] = lambda epoch, step, metrics, path: None
    cancelled: Callable[[], bool] = lambda: False


@dataclass
class TrainingResult:
    adapter_dir: Path  # the adapter of the last epoch trained
    trained_tokens: int
    base_valid_loss: float | None
    valid_losses: list[float]
    best_epoch: int
    stopped_early: bool
    final_epoch: int
    resumed_from_epoch: int
    metrics_rows: list[dict[str, Any]] = field(default_factory=list)
    tokens_per_second: float = 0.0


def latest_checkpoint(job_dir: Path) -> Path | None:
    """The newest complete epoch checkpoint (its state file is written last)."""
    done = [p for p in (job_dir / "checkpoints").glob("epoch-*") if (p / STATE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def train_lora(
    base_dir: Path,
    train: Sequence[Example],
    validation: Sequence[Example],
    hp: Hyperparameters,
    job_dir: Path,
    *,
    seed: int,
    base_learning_rate: float,
    callbacks: TrainingCallbacks | None = None,
    init_adapter: Path | None = None,
) -> TrainingResult:
    """Fine-tune a LoRA adapter on ``train``; resume from the newest checkpoint in ``job_dir``.

    The adapter of the last epoch trained is copied to ``job_dir/adapter``; ``best_epoch`` names
    the epoch with the lowest validation loss (the last one without validation data).
    With ``init_adapter`` (incremental fine-tuning) training continues that adapter, LoRA shape
    included, instead of a new one; the "base" validation loss is then the parent's.
    """
    import torch
    from peft import PeftModel, get_peft_model

    cb = callbacks or TrainingCallbacks()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base, tokenizer = load_causal_lm(base_dir)
    max_length = min(context_length(base), 4096)
    pad_id = tokenizer.pad_token_id
    encoded_train = [e for e in (encode_example(tokenizer, x, max_length) for x in train) if e.trained_tokens]
    encoded_valid = [
        e for e in (encode_example(tokenizer, x, max_length) for x in validation) if e.trained_tokens
    ]
    if not encoded_train:
        raise ValueError("no training example has an assistant answer inside the model's context")

    resume_dir = latest_checkpoint(job_dir)
    if resume_dir is not None:
        model = PeftModel.from_pretrained(base, resume_dir, is_trainable=True)
        state = torch.load(resume_dir / STATE_FILE, weights_only=False)
    elif init_adapter is not None:
        torch.manual_seed(seed)
        model = PeftModel.from_pretrained(base, init_adapter, is_trainable=True)
        state = None
        cb.event(
            "Continuing the fine-tune's adapter (its LoRA rank and target modules are kept)", None, "message"
        )
    else:
        torch.manual_seed(seed)
        model = get_peft_model(base, lora_config(base, hp))
        state = None
    model.to(device)
    model.train()

    per_epoch = steps_per_epoch(len(encoded_train), hp.batch_size)
    total_steps = per_epoch * hp.n_epochs
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=base_learning_rate * hp.learning_rate_multiplier,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1 - step / (total_steps + 1))
    )

    history: dict[str, Any] = {
        "valid_losses": [],
        "metrics_rows": [],
        "trained_tokens": 0,
        "epoch": 0,
        "step": 0,
        "base_valid_loss": None,
        "train_seconds": 0.0,
    }
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = state["history"]
        cb.event(
            f"Resumed from the checkpoint of epoch {history['epoch']} (step {history['step']})",
            None,
            "message",
        )
    elif encoded_valid:
        base_loss, base_acc = evaluate(model, encoded_valid, pad_id, device)
        history["base_valid_loss"] = base_loss
        cb.event(
            ("Starting (parent fine-tune)" if init_adapter is not None else "Base")
            + f" model validation loss={base_loss:.4f}",
            {"step": 0, "valid_loss": base_loss, "valid_mean_token_accuracy": base_acc, "base_model": True},
            "metrics",
        )
    resumed_from = history["epoch"]

    for epoch in range(history["epoch"] + 1, hp.n_epochs + 1):
        order = list(range(len(encoded_train)))
        random.Random(seed * 1000 + epoch).shuffle(order)
        started = time.perf_counter()
        for first in range(0, len(order), hp.batch_size):
            if cb.cancelled():
                raise TrainingCancelled()
            batch = [encoded_train[i] for i in order[first : first + hp.batch_size]]
            loss_sum, n_tokens, correct = batch_loss(model, batch, pad_id, device)
            (loss_sum / max(1, n_tokens)).backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            history["step"] += 1
            history["trained_tokens"] += sum(len(e.input_ids) for e in batch)
            row = {
                "step": history["step"],
                "train_loss": loss_sum.item() / max(1, n_tokens),
                "train_accuracy": correct / max(1, n_tokens),
                "valid_loss": None,
                "valid_mean_token_accuracy": None,
            }
            history["metrics_rows"].append(row)
            cb.event(
                f"Step {history['step']}/{total_steps}: training loss={row['train_loss']:.4f}",
                {
                    "step": history["step"],
                    "train_loss": row["train_loss"],
                    "train_mean_token_accuracy": row["train_accuracy"],
                    "total_steps": total_steps,
                },
                "metrics",
            )
        history["train_seconds"] += time.perf_counter() - started
        metrics: dict[str, float] = {
            "step": float(history["step"]),
            "epoch": float(epoch),
            "train_loss": history["metrics_rows"][-1]["train_loss"],
            "train_mean_token_accuracy": history["metrics_rows"][-1]["train_accuracy"],
        }
        if encoded_valid:
            valid_loss, valid_acc = evaluate(model, encoded_valid, pad_id, device)
            history["valid_losses"].append(valid_loss)
            history["metrics_rows"][-1].update(valid_loss=valid_loss, valid_mean_token_accuracy=valid_acc)
            metrics.update(
                valid_loss=valid_loss,
                valid_mean_token_accuracy=valid_acc,
                full_valid_loss=valid_loss,
                full_valid_mean_token_accuracy=valid_acc,
            )
            cb.event(
                f"Epoch {epoch}/{hp.n_epochs}: validation loss={valid_loss:.4f}",
                {
                    "step": history["step"],
                    "epoch": epoch,
                    "valid_loss": valid_loss,
                    "full_valid_loss": valid_loss,
                    "valid_mean_token_accuracy": valid_acc,
                },
                "metrics",
            )
        history["epoch"] = epoch
        checkpoint = _save_checkpoint(job_dir, epoch, model, optimizer, scheduler, history)
        cb.checkpoint(epoch, history["step"], metrics, checkpoint)
        if should_stop_early(history["valid_losses"], hp.early_stopping_patience):
            cb.event(f"Validation loss rose after epoch {epoch}: stopping early", None, "message")
            break

    chosen = best_epoch(history["valid_losses"]) if history["valid_losses"] else history["epoch"]
    adapter_dir = job_dir / "adapter"
    shutil.rmtree(adapter_dir, ignore_errors=True)
    shutil.copytree(
        job_dir / "checkpoints" / f"epoch-{history['epoch']}",
        adapter_dir,
        ignore=shutil.ignore_patterns(STATE_FILE),
    )
    seconds = history["train_seconds"]
    return TrainingResult(
        adapter_dir=adapter_dir,
        trained_tokens=history["trained_tokens"],
        base_valid_loss=history["base_valid_loss"],
        valid_losses=list(history["valid_losses"]),
        best_epoch=chosen,
        stopped_early=history["epoch"] < hp.n_epochs,
        final_epoch=history["epoch"],
        resumed_from_epoch=resumed_from,
        metrics_rows=list(history["metrics_rows"]),
        tokens_per_second=history["trained_tokens"] / seconds if seconds > 0 else 0.0,
    )


def _save_checkpoint(
    job_dir: Path, epoch: int, model: Any, optimizer: Any, scheduler: Any, history: dict[str, Any]
) -> Path:
    """Write the adapter and the resume state; the state file lands last, by rename."""
    import torch

    target = job_dir / "checkpoints" / f"epoch-{epoch}"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    model.save_pretrained(target)
    partial = target / (STATE_FILE + ".partial")
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "history": history},
        partial,
    )
    partial.rename(target / STATE_FILE)
    return target


def answer_loss(model: Any, tokenizer: Any, examples: Sequence[Example]) -> float:
    """Mean loss per answer token of ``model`` on ``examples`` (for honest base-vs-tuned checks)."""
    encoded = [encode_example(tokenizer, x, context_length(model)) for x in examples]
    loss, _ = evaluate(model, [e for e in encoded if e.trained_tokens], tokenizer.pad_token_id, model.device)
    return loss if not math.isnan(loss) else float("inf")
