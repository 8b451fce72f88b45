"""A traffic replayer: chat requests drawn from a JSONL chat file, sent through the gateway.

What a rollout needs to be watched without production traffic (the demo, a staging soak) and
what a user can point at their own logs: every line ``{"messages": [...]}`` (an optional
``"user"`` keeps that row's user), the conversation up to its last assistant turn sent with the
official ``openai`` SDK as a sticky user (``user=...``, so the gateway keeps each one on its arm),
at a steady rate, bounded by a request count and a duration: it always stops.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from tuneops.errors import DatasetError, UserError

VERSION_HEADER = "x-tuneops-model-version"
ARM_HEADER = "x-tuneops-arm"


@dataclass(frozen=True)
class ChatPrompt:
    """One request to replay: the messages and, when the log had one, its user."""

    messages: tuple[dict[str, str], ...]
    user: str | None = None


def read_chat_prompts(path: Path) -> list[ChatPrompt]:
    """The prompts of a JSONL chat file (a trailing assistant turn, the reference, is dropped).

    Raises:
        DatasetError: the file is missing, empty, or a line is not a chat row.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such chat file")
    prompts: list[ChatPrompt] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                messages = [
                    {"role": str(m["role"]), "content": str(m.get("content") or "")} for m in row["messages"]
                ]
            except (ValueError, KeyError, TypeError) as exc:
                raise DatasetError(f"{path}:{number}: not a chat row with 'messages' ({exc})") from exc
            while messages and messages[-1]["role"] == "assistant":
                messages.pop()
            if not any(m["role"] == "user" for m in messages):
                raise DatasetError(f"{path}:{number}: no user message to send")
            user = row.get("user")
            prompts.append(ChatPrompt(tuple(messages), str(user) if user else None))
    if not prompts:
        raise DatasetError(f"{path}: no chat rows")
    return prompts


@dataclass(frozen=True)
class ReplayPlan:
    """How much to send: ``rate`` requests a second over ``users`` sticky users, until ``requests``
    were sent or ``duration_seconds`` passed, whichever comes first."""

    rate: float = 5.0
    users: int = 50
    duration_seconds: float = 60.0
    requests: int | None = None
    concurrency: int = 8
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.users < 1 or self.duration_seconds <= 0 or self.concurrency < 1:
            raise UserError("--rate, --users, --duration and --concurrency must be positive")
        if self.requests is not None and self.requests < 1:
            raise UserError("--requests must be positive")


@dataclass
class ReplayReport:
    """What was sent and what came back (per served version and arm, from the gateway's headers)."""

    sent: int = 0
    answered: int = 0
    failed: int = 0
    elapsed_seconds: float = 0.0
    versions: Counter[str] = field(default_factory=Counter)
    arms: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "answered": self.answered, "failed": self.failed,
                "elapsed_seconds": round(self.elapsed_seconds, 2), "versions": dict(self.versions),
                "arms": dict(self.arms), "errors": dict(self.errors)}  # fmt: skip


def replay_traffic(
    gateway_url: str,
    api_key: str | None,
    model: str,
    prompts: list[ChatPrompt],
    plan: ReplayPlan,
    *,
    progress: Callable[[ReplayReport], None] | None = None,
) -> ReplayReport:
    """Send ``prompts`` (drawn at random, seeded) through the gateway at ``plan.rate``, within its bounds."""
    if not prompts:
        raise UserError("nothing to replay")
    rng = random.Random(plan.seed)
    report = ReplayReport()
    lock = threading.Lock()
    client = openai.OpenAI(base_url=gateway_url, api_key=api_key or "unused", max_retries=0, timeout=120)
    extra: dict[str, Any] = {}
    if plan.max_tokens is not None:
        extra["max_tokens"] = plan.max_tokens
    if plan.temperature is not None:
        extra["temperature"] = plan.temperature

    def send(prompt: ChatPrompt, user: str) -> None:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=model,
                messages=list(prompt.messages),
                user=user,
                **extra,  # type: ignore[arg-type]
            )
            raw.parse()
            with lock:
                report.answered += 1
                report.versions[raw.headers.get(VERSION_HEADER, "?")] += 1
                report.arms[raw.headers.get(ARM_HEADER, "?")] += 1
        except openai.APIError as exc:
            with lock:
                report.failed += 1
                report.errors[type(exc).__name__] += 1

    start = time.monotonic()
    deadline = start + plan.duration_seconds
    limit = plan.requests if plan.requests is not None else float("inf")
    try:
        with ThreadPoolExecutor(plan.concurrency, thread_name_prefix="replay") as pool:
            in_flight: set[Any] = set()
            while report.sent < limit and (now := time.monotonic()) < deadline:
                due = start + report.sent / plan.rate
                if due > now:
                    time.sleep(min(due - now, deadline - now))
                    continue
                in_flight = {f for f in in_flight if not f.done()}
                if len(in_flight) >= plan.concurrency:  # the gateway is slower than the rate: do not queue up
                    time.sleep(0.005)
                    continue
                prompt = rng.choice(prompts)
                user = prompt.user or f"replay-user-{rng.randrange(plan.users)}"
                in_flight.add(pool.submit(send, prompt, user))
                report.sent += 1
                if progress is not None and report.sent % 50 == 0:
                    progress(report)
    finally:
        client.close()
        report.elapsed_seconds = time.monotonic() - start
    return report
