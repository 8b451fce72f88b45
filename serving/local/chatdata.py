"""Validate chat fine-tuning files the way OpenAI's ``validating_files`` step does (pure).

A file is JSON Lines; each line is ``{"messages": [{"role", "content"}, ...]}`` with string
content, roles ``system``/``user``/``assistant`` (``developer`` is read as ``system``) and at
least one assistant message to learn from. Problems name the line, so the job error tells the
user exactly where to look.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

ROLES = ("system", "user", "assistant", "developer")


class ChatFileError(ValueError):
    """The file is not valid chat fine-tuning data; ``line`` is 1-based (0 for the whole file)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


@dataclass(frozen=True)
class Message:
    role: str
    content: str


Example = tuple[Message, ...]


def _message(line: int, index: int, raw: object) -> Message:
    where = f"messages[{index}]"
    if not isinstance(raw, Mapping):
        raise ChatFileError(line, f"{where} must be an object with role and content")
    role = raw.get("role")
    if role not in ROLES:
        raise ChatFileError(line, f"{where}.role must be one of system, user, assistant (got {role!r})")
    content = raw.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        texts = [p.get("text") for p in content if isinstance(p, Mapping) and p.get("type") == "text"]
        if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
            raise ChatFileError(line, f"{where}.content parts must all be text parts")
        content = "".join(t for t in texts if isinstance(t, str))
    if not isinstance(content, str):
        raise ChatFileError(line, f"{where}.content must be a string")
    return Message("system" if role == "developer" else str(role), content)


def parse_example(line: int, raw: object) -> Example:
    """One training example from its decoded JSON line."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("messages"), list):
        raise ChatFileError(line, 'each line must be an object with a "messages" list')
    messages = tuple(_message(line, i, m) for i, m in enumerate(raw["messages"]))
    if not any(m.role == "assistant" for m in messages):
        raise ChatFileError(line, "the example has no assistant message to learn from")
    return messages


def parse_chat_jsonl(data: bytes, *, min_examples: int = 1) -> list[Example]:
    """Every example of a chat JSONL file, or ``ChatFileError`` naming the first bad line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChatFileError(0, f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    examples: list[Example] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ChatFileError(number, f"not valid JSON ({exc.msg})") from exc
        examples.append(parse_example(number, raw))
    if len(examples) < min_examples:
        raise ChatFileError(0, f"the file has {len(examples)} examples; at least {min_examples} are required")
    return examples


def as_dicts(example: Example) -> list[dict[str, str]]:
    """Messages in the shape chat templates expect."""
    return [{"role": m.role, "content": m.content} for m in example]
