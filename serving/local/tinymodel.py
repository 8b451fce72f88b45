"""Build ``tuneops-tiny``: a small GPT-2-style base model made on this machine, with no download.

Nothing on PyPI ships a small pretrained causal LM and the machine is offline, so the default base
model is built from parts that ship with the project: a byte-level BPE tokenizer trained on the
corpus in ``corpus/``, a GPT-2 config, and a short pretraining run (a raw PyTorch loop: at this size
the HF Trainer's per-step overhead dominates). The result is an ordinary Hugging Face model folder,
so the rest of the service treats it like any base model a user has on disk.

Two profiles: ``default`` (writes recognisable language, built in well under 90 s on 2 CPU cores)
and ``test`` (same shape, a fraction of the steps, for the test suite).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

TINY_MODEL_ID = "tuneops-tiny"
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
BUILD_INFO = "tuneops-build.json"


@dataclass(frozen=True)
class TinyProfile:
    """Size and pretraining budget of a ``tuneops-tiny`` build."""

    name: str
    vocab_size: int
    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    pretrain_steps: int
    batch_size: int
    seq_len: int
    learning_rate: float


PROFILES: dict[str, TinyProfile] = {
    # ~15k tokens/s on one core of the 2-core box: ~45 s for the default build (more, shorter steps
    # beat fewer long ones here: 700x16x64 reaches a lower loss than 400x16x128).
    # Learning rates above ~5e-3 collapse these sizes into a unigram model (loss stuck near 6).
    "default": TinyProfile("default", 2048, 2, 128, 4, 1024, 700, 16, 64, 3e-3),
    "test": TinyProfile("test", 1024, 2, 64, 2, 1024, 150, 16, 64, 3e-3),
}


def corpus_text() -> str:
    """The pretraining text that ships with tuneops."""
    return (resources.files("tuneops.serving.local") / "corpus" / "python-docstrings.txt").read_text("utf-8")


def is_built(model_dir: Path) -> bool:
    """True when ``model_dir`` holds a finished build (the build info is written last)."""
    return (model_dir / BUILD_INFO).is_file()


def ensure_tiny_model(
    model_dir: Path, profile: str = "default", *, log: Callable[[str], None] | None = None
) -> Path:
    """Return ``model_dir``, building ``tuneops-tiny`` there first if it is not built yet.

    The build happens in a sibling temporary folder that is renamed into place, so a crash or a
    concurrent builder never leaves a half-written model behind.
    """
    if is_built(model_dir):
        return model_dir
    if profile not in PROFILES:
        raise ValueError(f"unknown tiny-model profile {profile!r}; choose one of {sorted(PROFILES)}")
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = model_dir.parent / f".{model_dir.name}.building-{os.getpid()}-{time.time_ns()}"
    try:
        build_tiny_model(staging, PROFILES[profile], log=log)
        try:
            staging.rename(model_dir)
        except OSError:
            if not is_built(model_dir):  # someone else's half build: replace it
                shutil.rmtree(model_dir, ignore_errors=True)
                staging.rename(model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir


def build_tiny_model(
    target: Path, profile: TinyProfile, *, seed: int = 0, log: Callable[[str], None] | None = None
) -> dict[str, float]:
    """Train the tokenizer, initialise a GPT-2 and pretrain it; save everything to ``target``.

    Returns the build's numbers (seconds, tokens/s, final loss), also written to the build info.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    say = log or (lambda _msg: None)
    started = time.perf_counter()
    random.seed(seed)
    torch.manual_seed(seed)
    lines = [line for line in corpus_text().splitlines() if line.strip()]

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        lines,
        trainers.BpeTrainer(
            vocab_size=profile.vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token=None,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.model_max_length = 1 << 30  # the corpus is tokenized line by line, not fed whole
    say(f"tokenizer trained: {len(tokenizer)} tokens")

    separator = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    stream: list[int] = []
    for ids in tokenizer(lines, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(separator)
    data = torch.tensor(stream, dtype=torch.long)
    tokenizer.model_max_length = profile.n_positions

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=profile.n_positions,
        n_embd=profile.n_embd,
        n_layer=profile.n_layer,
        n_head=profile.n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=profile.learning_rate, weight_decay=0.01)
    warmup = max(1, profile.pretrain_steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, profile.pretrain_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    generator = torch.Generator().manual_seed(seed)
    loss_value = float("nan")
    train_started = time.perf_counter()
    for step in range(profile.pretrain_steps):
        starts = torch.randint(0, len(data) - profile.seq_len - 1, (profile.batch_size,), generator=generator)
        batch = torch.stack([data[s : s + profile.seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()
        if step % 100 == 0 or step == profile.pretrain_steps - 1:
            say(f"pretrain step {step + 1}/{profile.pretrain_steps} loss {loss_value:.3f}")
    train_seconds = time.perf_counter() - train_started

    model.eval()
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    info = {
        "model_id": TINY_MODEL_ID,
        "profile": asdict(profile),
        "seed": seed,
        "corpus_tokens": len(stream),
        "final_pretrain_loss": loss_value,
        "pretrain_tokens_per_second": profile.pretrain_steps
        * profile.batch_size
        * profile.seq_len
        / train_seconds,
        "build_seconds": time.perf_counter() - started,
    }
    (target / BUILD_INFO).write_text(json.dumps(info, indent=2))
    say(f"built {TINY_MODEL_ID} ({profile.name}) in {info['build_seconds']:.1f}s, loss {loss_value:.3f}")
    return info
