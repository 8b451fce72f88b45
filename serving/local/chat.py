"""Chat completion requests and responses in OpenAI's shapes (pure: no model, no HTTP).

Validation names the offending parameter the way OpenAI does (``messages[2].content``), and the
response builders produce exactly the objects the ``openai`` SDK parses, streaming chunks included.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuneops.serving.local.rules import new_id
from tuneops.serving.openai_wire import ApiError

if TYPE_CHECKING:
    from tuneops.serving.local.inference import TokenLogprob, TopLogprob

SYSTEM_FINGERPRINT = "fp_tuneops_local"
MAX_TOP_LOGPROBS = 20
_ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[dict[str, str], ...]
    max_tokens: int | None
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    logprobs: bool = False
    top_logprobs: int = 0


def _number(body: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ApiError(
            f"Invalid '{name}': expected a number between {low:g} and {high:g}, got {value!r}.",
            param=name,
            code="invalid_value",
        )
    return float(value)


def _content(index: int, message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if content is None and message.get("role") == "assistant":
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if (
                not isinstance(part, Mapping)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise ApiError(
                    f"Invalid 'messages[{index}].content': only text parts are supported.",
                    param=f"messages[{index}].content",
                    code="invalid_value",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise ApiError(
        f"Invalid 'messages[{index}].content': expected a string or a list of text parts.",
        param=f"messages[{index}].content",
        code="invalid_type",
    )


def parse_chat_request(body: object) -> ChatRequest:
    """A validated chat request, or ``ApiError`` naming the bad parameter."""
    if not isinstance(body, Mapping):
        raise ApiError("The request body must be a JSON object.", code="invalid_type")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError("you must provide a model parameter", param="model", code="missing_required_parameter")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise ApiError(
            "Invalid 'messages': expected a non-empty array of messages.",
            param="messages",
            code="invalid_value" if isinstance(raw_messages, list) else "missing_required_parameter",
        )
    messages = []
    for i, message in enumerate(raw_messages):
        if not isinstance(message, Mapping) or message.get("role") not in _ROLES:
            raise ApiError(
                f"Invalid 'messages[{i}].role': expected one of {', '.join(_ROLES)}.",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
        role = "system" if message["role"] == "developer" else str(message["role"])
        messages.append({"role": role, "content": _content(i, message)})
    n = body.get("n")
    if n not in (None, 1):
        raise ApiError(
            "Invalid 'n': this service returns one choice per request (n=1).", param="n", code="invalid_value"
        )
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise ApiError(
            f"Invalid 'max_tokens': expected an integer >= 1, got {max_tokens!r}.",
            param="max_tokens",
            code="invalid_value",
        )
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ApiError("Invalid 'seed': expected an integer.", param="seed", code="invalid_type")
    stop = body.get("stop")
    stops: tuple[str, ...]
    if stop is None:
        stops = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise ApiError(
            "Invalid 'stop': expected a string or up to 4 strings.", param="stop", code="invalid_value"
        )
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise ApiError("Invalid 'stream': expected a boolean.", param="stream", code="invalid_type")
    options = body.get("stream_options") or {}
    if not isinstance(options, Mapping):
        raise ApiError(
            "Invalid 'stream_options': expected an object.", param="stream_options", code="invalid_type"
        )
    logprobs, top_logprobs = _logprobs(body)
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        seed=seed,
        stop=stops,
        stream=stream,
        include_usage=bool(options.get("include_usage")),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


def _logprobs(body: Mapping[str, Any]) -> tuple[bool, int]:
    """``logprobs`` (a boolean) and ``top_logprobs`` (0..20, only together with ``logprobs``)."""
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise ApiError("Invalid 'logprobs': expected a boolean.", param="logprobs", code="invalid_type")
    top = body.get("top_logprobs")
    if top is None:
        return bool(logprobs), 0
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS:
        raise ApiError(
            f"Invalid 'top_logprobs': expected an integer between 0 and {MAX_TOP_LOGPROBS}, got {top!r}.",
            param="top_logprobs",
            code="invalid_value",
        )
    if not logprobs:
        raise ApiError(
            "Invalid 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
            param="top_logprobs",
            code="invalid_value",
        )
    return True, top


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _entry(token: TopLogprob) -> dict[str, Any]:
    return {
        "token": token.token,
        "logprob": token.logprob,
        "bytes": None if token.raw is None else list(token.raw),
    }


def choice_logprobs(tokens: Sequence[TokenLogprob]) -> dict[str, Any]:
    """A choice's ``logprobs`` object: one ``ChatCompletionTokenLogprob`` per answer token."""
    return {
        "content": [{**_entry(t), "top_logprobs": [_entry(top) for top in t.top]} for t in tokens],
        "refusal": None,
    }


def completion(
    model: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    logprobs: Sequence[TokenLogprob] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` object (``logprobs``: the answer's tokens, when the request asked)."""
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "finish_reason": finish_reason,
                "logprobs": None if logprobs is None else choice_logprobs(logprobs),
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


@dataclass
class ChunkFactory:
    """Builds the ``chat.completion.chunk`` objects of one stream (same id and timestamp).

    With ``logprobs`` every content chunk carries the entries of the tokens it sends.
    """

    model: str
    include_usage: bool
    logprobs: bool = False

    def __post_init__(self) -> None:
        self.id = new_id("chatcmpl-")
        self.created = int(time.time())

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def delta(
        self, content: str, *, role: bool = False, tokens: Sequence[TokenLogprob] = ()
    ) -> dict[str, Any]:
        delta: dict[str, Any] = {"content": content}
        if role:
            delta["role"] = "assistant"
        logprobs = choice_logprobs(tokens) if self.logprobs and not role else None
        return self._chunk([{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}])

    def finish(self, finish_reason: str) -> dict[str, Any]:
        return self._chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        chunk = self._chunk([])
        chunk["usage"] = usage(prompt_tokens, completion_tokens)
        return chunk
