"""Text generation for chat completions: loading models (base or base + LoRA) and sampling.

A hand-written decoding loop with a KV cache rather than ``model.generate``: it streams token by
token without an extra thread, honours ``seed`` exactly (its own ``torch.Generator``), and stops
on the template's end-of-turn token or a user ``stop`` string. Fine-tuned adapters are merged
into a copy of their base once and kept in a small LRU cache, so a fine-tuned model answers as
fast as a base one. Non-streamed completions go through ``submit``, which decodes concurrent
requests for the same model together (:mod:`tuneops.serving.local.batching`); every forward pass,
batched or not, is ``next_logits``, so a batch of one computes exactly what ``stream`` does.

With ``SamplingParams.logprobs`` each generated token also gets its log-probability under the
model (``log_softmax`` of the raw logits it was picked from: temperature and ``top_p`` shape the
choice, not the reported probability) and the ``top_logprobs`` most likely alternatives. Tokens
cut off with a ``stop`` string are not part of the answer, so they have no entry either. Without
``logprobs`` none of it is computed.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneops.serving.local.training import context_length, load_causal_lm, render


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False  # report each generated token's log-probability
    top_logprobs: int = 0  # and this many most likely tokens at each position (0..20)


@dataclass(frozen=True)
class TopLogprob:
    """One token and its log-probability at a position (``raw``: its exact bytes, when known)."""

    token: str
    logprob: float
    raw: bytes | None


@dataclass(frozen=True)
class TokenLogprob(TopLogprob):
    """A generated token's log-probability and the most likely tokens at its position."""

    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class Delta:
    """A piece of streamed text and the log-probabilities of the tokens it completes (if asked)."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class GenerationResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    batch_size: int = field(default=1, compare=False)  # rows decoded together with this one
    # Per answer token when asked (float rounding differs in a batch, hence not compared).
    logprobs: tuple[TokenLogprob, ...] | None = field(default=None, compare=False)


class PromptTooLong(ValueError):
    """The prompt alone fills the model's context window."""

    def __init__(self, prompt_tokens: int, limit: int) -> None:
        super().__init__(
            f"This model's maximum context length is {limit} tokens; the messages resulted in "
            f"{prompt_tokens} tokens. Shorten the messages."
        )


class LoadedModel:
    """A model ready to answer chats: weights in eval mode plus its tokenizer."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context = context_length(model)
        self._cache_argument = _cache_argument(model)
        stops = {tokenizer.eos_token_id}
        for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
                stops.add(token_id)
        self.stop_ids = {t for t in stops if t is not None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._keep_last = _accepts(model, "logits_to_keep")  # prefill: the last position's logits only
        self._batcher: Any = None
        self._batcher_lock = threading.Lock()
        self._pieces: dict[int, tuple[str, bytes | None]] = {}
        self._byte_level = _is_byte_level(tokenizer)
        # Without a chat template of its own the model is taught ChatML as plain text: stop on it as text.
        self.text_stops: tuple[str, ...] = (
            () if getattr(tokenizer, "chat_template", None) else ("<|im_end|>",)
        )

    def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        text = render(self.tokenizer, messages, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def stream(
        self, messages: Sequence[dict[str, str]], params: SamplingParams
    ) -> Iterator[Delta | GenerationResult]:
        """Yield text deltas as they are decoded, then one ``GenerationResult``.

        With ``params.logprobs`` a delta carries the entries of the tokens whose text starts in it
        (text held back for a possible ``stop`` string releases its tokens when it is sent).
        """
        stops = params.stop + self.text_stops
        import torch

        prompt = self.prompt_ids(messages)
        budget = self.room(prompt, params)
        generator = new_generator(params.seed)
        hold_back = max((len(s) for s in stops), default=1) - 1
        generated: list[int] = []
        scored = ScoredTokens() if params.logprobs else None
        emitted = ""
        finish = "length"
        cache = self.new_cache()
        step_input = torch.tensor([prompt])
        mask = torch.ones((1, len(prompt)), dtype=torch.long)
        positions = torch.arange(len(prompt)).unsqueeze(0)
        with torch.no_grad():
            for _ in range(budget):
                logits = self.next_logits(step_input, mask, positions, cache)
                row = logits[0].float()
                token = pick_token(row, params, generator)
                if token in self.stop_ids:
                    finish = "stop"
                    break
                if scored is not None:
                    scored.add(self.token_logprob(row, token, params.top_logprobs))
                generated.append(token)
                text = self.tokenizer.decode(generated, skip_special_tokens=True)
                if scored is not None:
                    scored.text_is(len(text))
                cut = first_stop(text, stops)
                if cut is not None:
                    text, finish = text[:cut], "stop"
                    if len(text) > len(emitted):
                        yield Delta(text[len(emitted) :], scored.release(len(text)) if scored else ())
                    emitted = text
                    break
                safe = len(text) - hold_back
                if text.endswith("\ufffd"):  # an unfinished multi-byte character
                    safe = min(safe, len(text) - 1)
                if safe > len(emitted):
                    yield Delta(text[len(emitted) : safe], scored.release(safe) if scored else ())
                    emitted = text[:safe]
                step_input = torch.tensor([[token]])
                mask = torch.cat([mask, torch.ones((1, 1), dtype=torch.long)], dim=1)
                positions = positions[:, -1:] + 1
        if finish != "stop" or first_stop(emitted, stops) is None:
            final = self.tokenizer.decode(generated, skip_special_tokens=True)
            cut = first_stop(final, stops)
            final = final if cut is None else final[:cut]
            rest = scored.release_kept(cut) if scored else ()
            if len(final) > len(emitted) and final.startswith(emitted):
                yield Delta(final[len(emitted) :], rest)
                emitted = final
            elif rest:
                yield Delta("", rest)
        elif scored is not None:
            scored.keep(len(emitted))
        logprobs = scored.kept if scored else None
        yield GenerationResult(emitted, finish, len(prompt), len(generated), logprobs=logprobs)

    def submit(self, messages: Sequence[dict[str, str]], params: SamplingParams) -> GenerationResult:
        """Like ``complete``, decoded together with concurrent requests for this model."""
        with self._batcher_lock:
            if self._batcher is None:
                from tuneops.serving.local.batching import Batcher

                self._batcher = Batcher(self)
        return self._batcher.submit(self.prompt_ids(messages), params)

    def close(self) -> None:
        """Let the batcher's thread end once its queue is empty (the model left the cache)."""
        with self._batcher_lock:
            if self._batcher is not None:
                self._batcher.close()

    def room(self, prompt: Sequence[int], params: SamplingParams) -> int:
        """How many tokens a completion of ``prompt`` may generate; ``PromptTooLong`` when none."""
        room = self.context - len(prompt)
        if room < 1:
            raise PromptTooLong(len(prompt), self.context)
        return min(params.max_tokens or room, room)

    def next_logits(self, input_ids: Any, attention_mask: Any, position_ids: Any, cache: Any) -> Any:
        """One forward pass over new tokens (rows x positions); the last position's logits per row.

        Explicit positions and mask make left-padded rows see exactly their own tokens at their
        own positions, which is what lets a row decode the same in a batch as alone.
        """
        device = self.model.device
        extra = {"logits_to_keep": 1} if self._keep_last else {}
        out = self.model(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            position_ids=position_ids.to(device),
            use_cache=True,
            **{self._cache_argument: cache},
            **extra,
        )
        return out.logits[:, -1, :]

    def token_logprob(self, logits: Any, token: int, top: int = 0) -> TokenLogprob:
        """``token``'s log-probability under one position's (float) logits, with the ``top`` likeliest."""
        import torch

        logprobs = torch.log_softmax(logits, dim=-1)
        alternatives: tuple[TopLogprob, ...] = ()
        if top:
            values, ids = torch.topk(logprobs, min(top, logprobs.shape[-1]))
            alternatives = tuple(
                _alternative(*self.token_piece(int(i)), float(v))
                for v, i in zip(values.tolist(), ids.tolist(), strict=True)
            )
        text, raw = self.token_piece(token)
        return TokenLogprob(text, _finite(float(logprobs[token])), raw, alternatives)

    def token_piece(self, token: int) -> tuple[str, bytes | None]:
        """A token's text and exact bytes (a byte-level BPE token may hold part of a character)."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = token_bytes(self.tokenizer, token, byte_level=self._byte_level)
        return piece

    def complete(self, messages: Sequence[dict[str, str]], params: SamplingParams) -> GenerationResult:
        result = None
        for item in self.stream(messages, params):
            if isinstance(item, GenerationResult):
                result = item
        assert result is not None
        return result

    def new_cache(self) -> Any:
        """An empty KV cache the model fills in place (``next_logits`` passes it by the right keyword).

        transformers 5.24 renamed ``past_key_values=`` to ``cache=`` (the old name warns, and is
        removed in 5.40); earlier 5.x releases know only the old name. Both update a
        ``DynamicCache`` in place, so the loop never reads the cache back from the output.
        """
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)


def pick_token(logits: Any, params: SamplingParams, generator: Any) -> int:
    """The next token from one row's logits: argmax at temperature 0, else a seeded sample."""
    import torch

    if params.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < params.top_p
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


LOGPROB_FLOOR = -9999.0  # OpenAI's value for "very unlikely" (JSON has no -inf)


def _finite(logprob: float) -> float:
    return logprob if logprob > LOGPROB_FLOOR else LOGPROB_FLOOR


def _alternative(text: str, raw: bytes | None, logprob: float) -> TopLogprob:
    return TopLogprob(text, _finite(logprob), raw)


class ScoredTokens:
    """The log-probabilities of one completion's tokens and where each token's text starts.

    A token belongs to the answer when its text starts before the cut of a ``stop`` string;
    ``release`` hands out, in order, the entries of tokens whose text starts before a point of the
    text that is being sent.
    """

    def __init__(self) -> None:
        self.entries: list[TokenLogprob] = []
        self.starts: list[int] = []
        self.kept: tuple[TokenLogprob, ...] = ()
        self._length = 0
        self._released = 0

    def add(self, entry: TokenLogprob) -> None:
        """A new token, whose text starts where the text decoded so far ends."""
        self.entries.append(entry)
        self.starts.append(self._length)

    def text_is(self, length: int) -> None:
        """The length of the text decoded so far (after the last token)."""
        self._length = length

    def release(self, upto: int) -> tuple[TokenLogprob, ...]:
        """The entries not yet released whose text starts before ``upto``."""
        end = self._released
        while end < len(self.entries) and self.starts[end] < upto:
            end += 1
        out = tuple(self.entries[self._released : end])
        self._released = end
        return out

    def keep(self, cut: int | None) -> tuple[TokenLogprob, ...]:
        """The answer's entries: all of them, or those starting before a ``stop`` string's cut."""
        self.kept = tuple(self.entries if cut is None else self.entries[: self._count_before(cut)])
        return self.kept

    def release_kept(self, cut: int | None) -> tuple[TokenLogprob, ...]:
        """Settle the answer's entries and release the ones not yet released."""
        kept = self.keep(cut)
        out = kept[self._released :]
        self._released = max(self._released, len(kept))
        return out

    def _count_before(self, cut: int) -> int:
        return sum(1 for start in self.starts if start < cut)


def new_generator(seed: int | None) -> Any:
    """The random stream of one completion: ``seed`` makes its samples repeatable."""
    import torch

    generator = torch.Generator(device="cpu")
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    return generator


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the first of ``stops`` begins in ``text`` (None when none occurs)."""
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


class ModelCache:
    """Loaded models by (base folder, adapter folder), least recently used evicted first."""

    def __init__(self, max_entries: int = 4) -> None:
        self._entries: OrderedDict[tuple[str, str | None], LoadedModel] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str | None], threading.Lock] = {}

    def get(self, base_dir: Path, adapter_dir: Path | None = None) -> LoadedModel:
        key = (str(base_dir), str(adapter_dir) if adapter_dir else None)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:  # one load per key even when requests race
            with self._lock:
                if key in self._entries:
                    return self._entries[key]
            loaded = load_model(base_dir, adapter_dir)
            with self._lock:
                self._entries[key] = loaded
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)[1].close()
            return loaded


def load_model(base_dir: Path, adapter_dir: Path | None = None) -> LoadedModel:
    """A base model, or a base with a LoRA adapter merged into its weights."""
    import torch

    model, tokenizer = load_causal_lm(base_dir)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    model.eval()
    return LoadedModel(model, tokenizer)


def _byte_table() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character to byte: how byte-level BPE vocabularies spell bytes."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


_BYTE_LEVEL = _byte_table()
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return type(getattr(backend, "decoder", None)).__name__ == "ByteLevel"


def token_bytes(tokenizer: Any, token: int, *, byte_level: bool) -> tuple[str, bytes | None]:
    """A token's text and its exact UTF-8 bytes.

    Byte-level BPE (GPT-2, SmolLM2, ``tuneops-tiny``) spells every byte as one character of its
    alphabet, and SentencePiece's byte fallback as ``<0xNN>``; other pieces (special tokens among
    them) are their decoded text. The text of a partial character shows U+FFFD.
    """
    piece = tokenizer.convert_ids_to_tokens(token)
    raw: bytes | None = None
    special = token in getattr(tokenizer, "all_special_ids", ()) or piece in tokenizer.get_added_vocab()
    if isinstance(piece, str) and not special:
        if byte_level and all(c in _BYTE_LEVEL for c in piece):
            raw = bytes(_BYTE_LEVEL[c] for c in piece)
        elif match := _BYTE_FALLBACK.fullmatch(piece):
            raw = bytes([int(match.group(1), 16)])
    if raw is None:
        text = tokenizer.decode([token], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return text, text.encode()
    return raw.decode("utf-8", errors="replace"), raw


def _accepts(model: Any, parameter: str) -> bool:
    import inspect

    try:
        return parameter in inspect.signature(type(model).forward).parameters
    except (TypeError, ValueError):
        return False


def _cache_argument(model: Any) -> str:
    """``cache`` where the model's ``forward`` declares it (transformers >= 5.24), else the old name."""
    import inspect

    forward = type(model).forward
    try:
        parameters = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in parameters else "past_key_values"
