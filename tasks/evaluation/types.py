"""Our own types for the evaluation stage: who is evaluated, on what, and what came back.

Plain frozen dataclasses with no SDK in them, so the pure modules, the adapters and the flows
all speak the same language.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from tuneops.tasks.evaluation.stats import Interval

Message = dict[str, str]
SystemPromptMode = Literal["keep", "inject", "strip"]


@dataclass(frozen=True)
class ModelUnderTest:
    """One model reached through an OpenAI-compatible endpoint, under a comparison label.

    Attributes:
        label: name in reports and gates: ``candidate``, ``base``, ``few-shot``, ``champion``.
        base_url: the endpoint, e.g. ``http://127.0.0.1:8765/v1``.
        model: the model id the endpoint knows (``ft:...``, a base model, an Azure deployment).
        api_key: the key; never logged, never part of a cache key or repr.
        api_key_env: alternatively, the environment variable that holds the key.
        system_prompt: the production system prompt, used per ``system_prompt_mode``.
        system_prompt_mode: ``keep`` the test row's system message, ``inject`` ``system_prompt``
            (replacing any in the row), or ``strip`` system messages.
        few_shot: example messages placed after the system prompt (the prompt-engineering baseline).
        price_per_1m_input_tokens: USD, for cost per row; None when unknown (then no cost).
        price_per_1m_output_tokens: USD, for cost per row; None when unknown.
    """

    label: str
    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False, compare=False)
    api_key_env: str | None = None
    system_prompt: str | None = None
    system_prompt_mode: SystemPromptMode = "keep"
    few_shot: tuple[tuple[tuple[str, str], ...], ...] = ()
    price_per_1m_input_tokens: float | None = None
    price_per_1m_output_tokens: float | None = None

    def identity(self) -> dict[str, Any]:
        """What determines this model's answers (for cache keys and MLflow params); no secrets."""
        return {
            "base_url": self.base_url.rstrip("/"),
            "model": self.model,
            "system_prompt": self.system_prompt,
            "system_prompt_mode": self.system_prompt_mode,
            "few_shot": [list(map(list, example)) for example in self.few_shot],
        }

    @property
    def priced(self) -> bool:
        """Whether a cost can be computed: a price is known for at least one token kind."""
        return self.price_per_1m_input_tokens is not None or self.price_per_1m_output_tokens is not None

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Cost of one request (0 for a token kind without a price)."""
        return (
            prompt_tokens * (self.price_per_1m_input_tokens or 0.0)
            + completion_tokens * (self.price_per_1m_output_tokens or 0.0)
        ) / 1e6

    def few_shot_messages(self) -> list[Message]:
        return [{"role": role, "content": content} for example in self.few_shot for role, content in example]


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings shared by every model in one comparison."""

    max_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "seed": self.seed}


@dataclass(frozen=True)
class TestExample:
    """One held-out row: the conversation up to the last assistant turn, and that turn as reference."""

    __test__ = False  # not a pytest class

    index: int
    messages: tuple[tuple[str, str], ...]
    reference: str

    @property
    def query(self) -> str:
        """The last user message: what judges and reports show as the question."""
        users = [content for role, content in self.messages if role == "user"]
        return users[-1] if users else ""

    @property
    def context(self) -> str:
        """The system message, if any (groundedness judges need something to ground on)."""
        systems = [content for role, content in self.messages if role == "system"]
        return "\n".join(systems)


def examples_digest(examples: tuple[TestExample, ...] | list[TestExample]) -> str:
    """sha256 of the examples' content, for cache keys when no dataset digest is given."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.messages, ex.reference]).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Answer:
    """One model's answer to one row, or why there is none."""

    index: int
    response: str | None
    latency_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    attempts: int = 1
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.response is not None and self.error is None


@dataclass(frozen=True)
class ModelAnswers:
    """Every answer of one model to the test rows, in row order."""

    model: ModelUnderTest
    answers: tuple[Answer, ...]
    cached: bool = False
    wall_seconds: float = 0.0  # time spent answering in this call (0 when all came from the cache)

    @property
    def label(self) -> str:
        return self.model.label

    @property
    def failed(self) -> tuple[Answer, ...]:
        return tuple(a for a in self.answers if not a.ok)


@dataclass(frozen=True)
class ModelSummary:
    """One model's aggregates: metric means with intervals, latency and cost."""

    label: str
    model: str
    rows: int
    metrics: dict[str, Interval | None]
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    cost_per_1k_usd: float | None
    tokens: int

    def mean(self, metric: str) -> float | None:
        interval = self.metrics.get(metric)
        return None if interval is None else interval.estimate
