"""How sure the model was of each answer: the mean token log-probability, captured at the gateway.

With ``serving.capture_logprobs`` on, the gateway asks an upstream that supports it for
``logprobs`` even when the client did not, records the mean log-probability of the answer's
tokens in the request log (the drift monitor's ``low_confidence_share``), and hands the client
back exactly what it asked for: ``logprobs: null`` unless it asked itself. A client that asked
gets them untouched and the mean is recorded all the same. An upstream that returns none (or a
provider kind not known to support the parameter, which is then not sent) leaves the mean None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

# OpenAI's chat completions take ``logprobs``; Azure OpenAI and tuneops' local service follow it.
LOGPROB_PROVIDERS = frozenset({"local", "openai", "azure-openai"})


class _HasProvider(Protocol):
    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def version(self) -> str: ...


class LogprobRefusals:
    """The model versions whose upstream refused the ``logprobs`` the gateway added.

    Some models behind a provider that takes the parameter still refuse it (OpenAI's reasoning
    models answer 400, ``param: logprobs``). A client that never asked for logprobs must not get
    that error: the gateway asks again without them and stops adding them for that version, so
    its answers just have no mean (the drift signal is then "not measured").
    """

    def __init__(self) -> None:
        self._versions: set[tuple[str, str]] = set()

    def allows(self, upstream: _HasProvider) -> bool:
        return (upstream.model, upstream.version) not in self._versions

    def note(self, upstream: _HasProvider, error_body: Mapping[str, Any]) -> bool:
        """Remember ``upstream`` when its 4xx ``error_body`` is about logprobs; True if it was."""
        error = error_body.get("error")
        if not isinstance(error, dict):
            return False
        about = f"{error.get('param') or ''} {error.get('message') or ''}".lower()
        if "logprobs" not in about:
            return False
        self._versions.add((upstream.model, upstream.version))
        return True


@dataclass(frozen=True)
class LogprobCapture:
    """What one request does about log-probabilities.

    Attributes:
        client_asked: the client sent ``logprobs: true`` (it sees them; nothing is stripped).
        add: the gateway asks for them on the client's behalf (and strips them from the answer).
    """

    client_asked: bool
    add: bool

    @classmethod
    def of(cls, body: Mapping[str, Any], enabled: bool) -> LogprobCapture:
        """The capture for a request ``body``; ``enabled`` is ``serving.capture_logprobs``.

        A body with ``top_logprobs`` but without ``logprobs: true`` is left alone: the upstream
        refuses it as it would without the gateway.
        """
        asked = body.get("logprobs") is True
        return cls(asked, enabled and not asked and body.get("top_logprobs") is None)

    def body_for(
        self, body: dict[str, Any], upstream: _HasProvider, refusals: LogprobRefusals | None = None
    ) -> dict[str, Any]:
        """The request body to send to ``upstream`` (``body`` itself when nothing is added)."""
        if (
            self.add
            and upstream.provider in LOGPROB_PROVIDERS
            and (refusals is None or refusals.allows(upstream))
        ):
            return {**body, "logprobs": True}
        return body

    def settle(self, answer: dict[str, Any]) -> float | None:
        """The mean of a chat completion's first choice; the client's copy loses what it did not ask for."""
        mean = mean_logprob(answer)
        if self.add:
            _strip(answer)
        return mean

    def gather(self) -> StreamLogprobs:
        """A collector for the chunks of a streamed answer."""
        return StreamLogprobs(strip=self.add)


@dataclass
class StreamLogprobs:
    """The running mean over a stream's chunks (first choice), stripping them when the client did not ask."""

    strip: bool
    total: float = 0.0
    count: int = 0

    def observe(self, event: dict[str, Any]) -> None:
        """Take one chunk's token log-probabilities (and strip them from it if so decided)."""
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("logprobs") is None:
                continue
            if choice.get("index", 0) == 0:
                for value in _values(choice["logprobs"]):
                    self.total += value
                    self.count += 1
            if self.strip:
                choice["logprobs"] = None

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


def mean_logprob(answer: Mapping[str, Any]) -> float | None:
    """The mean of ``choices[0].logprobs.content[*].logprob``; None when the answer has none."""
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    values = list(_values(choices[0].get("logprobs")))
    return sum(values) / len(values) if values else None


def _values(logprobs: object) -> list[float]:
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return []
    values = []
    for entry in content:
        value = entry.get("logprob") if isinstance(entry, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            values.append(float(value))
    return values


def _strip(answer: dict[str, Any]) -> None:
    for choice in answer.get("choices") or ():
        if isinstance(choice, dict) and choice.get("logprobs") is not None:
            choice["logprobs"] = None
