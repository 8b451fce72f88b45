"""Validation of OpenAI chat fine-tuning JSONL: pure logic, no I/O, no SDK.

The checks follow the OpenAI cookbook's data-preparation notebook and go further (content-part
lists, tool messages, duplicates, system-prompt consistency, binary input). The unit of work is a
*chunk*: a run of whole lines with the number of its first line, so the file driver
(:mod:`tuneops.tasks.data.scan`) can stream a file of any size through one process or fan chunks
out to several, and merge the :class:`ChunkResult` objects with :class:`ReportBuilder`.

Token counts follow the cookbook's ``num_tokens_from_messages``: 3 tokens per message plus its
role and content (and 1 more plus the tokens of ``name``), plus 3 to prime the reply. Only the
strings are tokenized, with a callable passed in, so this module never imports a tokenizer.

Every problem carries its 1-based line number (0 for whole-file problems) and a stable code.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

Severity = Literal["error", "warning"]
TokenCounter = Callable[[str], int]

# code -> (severity, what it means); the codes are part of the --json contract.
CODES: dict[str, tuple[Severity, str]] = {
    "empty_file": ("error", "the file holds no examples"),
    "binary_file": ("error", "the file is binary or not UTF-8 text"),
    "not_utf8": ("error", "the line is not valid UTF-8"),
    "line_too_long": ("error", "the line is longer than the reader's limit"),
    "invalid_json": ("error", "the line is not valid JSON (truncated?)"),
    "not_an_object": ("error", "the line is JSON but not an object"),
    "missing_messages": ("error", "the object has no 'messages' list"),
    "empty_messages": ("error", "'messages' is empty"),
    "message_not_object": ("error", "a message is not an object"),
    "unknown_key": ("warning", "a top-level key the fine-tuning format does not define"),
    "unknown_message_key": ("error", "a message key the fine-tuning format does not define"),
    "missing_role": ("error", "a message has no 'role'"),
    "invalid_role": ("error", "a role other than system/user/assistant/tool"),
    "missing_content": ("error", "a message has no 'content'"),
    "invalid_content": ("error", "content is neither a string nor a list of content parts"),
    "empty_content": ("error", "content is empty or only whitespace"),
    "invalid_name": ("error", "'name' is not a string"),
    "invalid_weight": ("error", "'weight' is not 0 or 1, or not on an assistant message"),
    "invalid_tool_calls": ("error", "'tool_calls' is malformed"),
    "invalid_tool_message": ("error", "a tool message that answers no assistant tool call"),
    "missing_assistant": ("error", "the example has no assistant message to learn from"),
    "missing_system_prompt": ("error", "no system message, but the spec requires one"),
    "too_many_tokens": ("error", "the example has more tokens than the model accepts"),
    "blank_line": ("warning", "an empty line (skipped)"),
    "duplicate": ("warning", "the same example appears earlier in the file"),
    "inconsistent_system_prompt": ("warning", "examples use different system prompts"),
    "too_few_examples": ("error", "fewer examples than fine-tuning accepts"),
    "few_examples": ("warning", "fewer examples than recommended"),
}

ROLES = frozenset({"system", "user", "assistant", "tool"})
PLAIN_ROLES = frozenset({"system", "user", "assistant"})  # roles whose messages need no cross-checks
TOP_LEVEL_KEYS = frozenset({"messages", "tools", "functions", "parallel_tool_calls"})
MESSAGE_KEYS = frozenset({"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call"})
MAX_DISTINCT_SYSTEM_PROMPTS = 1_000
SYSTEM_KEY_CACHE = 256
NO_SYSTEM_PROMPT = b""
OTHER_SYSTEM_PROMPTS = b"*"  # beyond MAX_DISTINCT_SYSTEM_PROMPTS, lumped together
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3

# OpenAI's default-epoch rule, as in the cookbook.
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem: where (1-based line, 0 for the whole file), which check, and what to do."""

    line: int
    code: str
    message: str

    @property
    def severity(self) -> Severity:
        return CODES[self.code][0]

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "code": self.code, "severity": self.severity, "message": self.message}


@dataclass(frozen=True)
class ValidationOptions:
    """What counts as valid. ``n_epochs`` None means OpenAI's "auto" rule."""

    max_tokens_per_example: int = 65_536
    require_system_prompt: bool = False
    min_examples: int = 10
    recommended_examples: int = 50
    n_epochs: int | None = None
    max_problems: int = 1_000
    max_line_bytes: int = 16 * 1024 * 1024


def estimate_epochs(n_examples: int, n_epochs: int | None = None) -> int:
    """Epochs a fine-tune will run: ``n_epochs`` when set, else OpenAI's default rule."""
    if n_epochs is not None:
        return n_epochs
    if n_examples <= 0:
        return TARGET_EPOCHS
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


@dataclass
class ChunkResult:
    """What one chunk of lines contributed; picklable so worker processes can return it.

    ``example_tokens`` and ``example_hashes`` are aligned with ``example_lines`` (one entry per
    non-blank line that parsed as a JSON object with a messages list).
    """

    first_line: int
    lines: int = 0
    blank_lines: int = 0
    invalid_examples: int = 0
    assistant_tokens: int = 0
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    example_lines: array[int] = field(default_factory=lambda: array("Q"))
    example_tokens: array[int] = field(default_factory=lambda: array("Q"))
    example_hashes: array[int] = field(default_factory=lambda: array("Q"))
    example_valid: array[int] = field(default_factory=lambda: array("B"))
    # system prompt digest -> [first line, count]; b"" stands for "no system prompt"
    system_prompts: dict[bytes, list[int]] = field(default_factory=dict)


class _CachedCounter:
    """Memoises token counts of strings that repeat (system prompts, role names)."""

    def __init__(self, count: TokenCounter, size: int = 256) -> None:
        self._count = count
        self._cache: dict[str, int] = {}
        self._size = size

    def cached(self, text: str) -> int:
        hit = self._cache.get(text)
        if hit is None:
            if len(self._cache) >= self._size:
                self._cache.clear()
            hit = self._cache[text] = self._count(text)
        return hit

    def __call__(self, text: str) -> int:
        return self._count(text)


class ChunkChecker:
    """Checks lines of one chunk; keeps nothing but the chunk's result."""

    def __init__(self, options: ValidationOptions, count_tokens: TokenCounter) -> None:
        self.options = options
        self.counter = _CachedCounter(count_tokens)
        self._system_keys: dict[str, bytes] = {}

    def _system_key(self, text: str) -> bytes:
        """A digest of a system prompt, memoised: most files repeat one prompt on every line."""
        key = self._system_keys.get(text)
        if key is None:
            if len(self._system_keys) >= SYSTEM_KEY_CACHE:
                self._system_keys.clear()
            key = self._system_keys[text] = hashlib.blake2b(text.encode(), digest_size=16).digest()
        return key

    def check_chunk(self, data: bytes, first_line: int) -> ChunkResult:
        """Check ``data`` (whole lines, ``\\n``-separated) whose first line is ``first_line``."""
        return self.check_chunk_lines(data.split(b"\n"), first_line)

    def check_chunk_lines(self, lines: list[bytes], first_line: int) -> ChunkResult:
        """Check a chunk already split at ``\\n`` (a trailing empty piece is not a line)."""
        result = ChunkResult(first_line=first_line)
        if lines and lines[-1] == b"":
            lines = lines[:-1]
        for offset, raw in enumerate(lines):
            self.check_line(raw, first_line + offset, result)
        result.lines = len(lines)
        return result

    def check_line(self, raw: bytes, line: int, result: ChunkResult) -> None:
        """Check one line and record it in ``result``."""
        stripped = raw.strip()
        if not stripped:
            result.blank_lines += 1
            _add(result, self.options, Problem(line, "blank_line", "empty line, skipped"))
            return
        try:
            obj = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            result.invalid_examples += 1
            try:
                stripped.decode("utf-8")
            except UnicodeDecodeError as decode_error:
                _add(
                    result,
                    self.options,
                    Problem(line, "not_utf8", f"not UTF-8 text (byte {decode_error.start + 1})"),
                )
                return
            _add(result, self.options, Problem(line, "invalid_json", f"not valid JSON: {_json_reason(exc)}"))
            return
        problems: list[Problem] = []
        tokens = self._check_example(obj, line, problems, result)
        valid = not any(p.severity == "error" for p in problems)
        if tokens is not None:
            result.example_lines.append(line)
            result.example_tokens.append(tokens)
            result.example_hashes.append(_example_hash(obj))
            result.example_valid.append(1 if valid else 0)
        if not valid:
            result.invalid_examples += 1
        for problem in problems:
            _add(result, self.options, problem)

    def _check_example(self, obj: Any, line: int, problems: list[Problem], result: ChunkResult) -> int | None:
        """Check one parsed line; return its token count, or None when it has no messages."""
        if not isinstance(obj, dict):
            problems.append(Problem(line, "not_an_object", f"expected a JSON object, got {_type_name(obj)}"))
            return None
        if not TOP_LEVEL_KEYS.issuperset(obj):
            for key in obj:
                if key not in TOP_LEVEL_KEYS:
                    problems.append(
                        Problem(line, "unknown_key", f"unknown key {key!r} (ignored by fine-tuning)")
                    )
        messages = obj.get("messages")
        if not isinstance(messages, list):
            what = "no 'messages' key" if messages is None else f"'messages' is {_type_name(messages)}"
            problems.append(Problem(line, "missing_messages", f"{what}; expected a list of messages"))
            return None
        if not messages:
            problems.append(Problem(line, "empty_messages", "'messages' is an empty list"))
            return None
        tokens = TOKENS_REPLY_PRIMING
        has_assistant = False
        system_text: str | None = None
        tool_call_ids: set[str] = set()
        for index, message in enumerate(messages):
            if type(message) is dict and len(message) == 2:
                # The common case, {"role": system|user|assistant, "content": "non-blank text"}:
                # the same checks and counts as the general path below, in fewer steps.
                role = message.get("role")
                content = message.get("content")
                if (
                    type(role) is str
                    and role in PLAIN_ROLES
                    and type(content) is str
                    and content
                    and not content.isspace()
                ):
                    tokens += TOKENS_PER_MESSAGE + self.counter.cached(role)
                    tokens += self._text_tokens(role, content, result)
                    if role == "system" and system_text is None:
                        system_text = content
                    has_assistant = has_assistant or role == "assistant"
                    continue
            where = f"messages[{index}]"
            if not isinstance(message, dict):
                problems.append(
                    Problem(
                        line, "message_not_object", f"{where} is {_type_name(message)}, expected an object"
                    )
                )
                continue
            tokens += TOKENS_PER_MESSAGE
            for key in message:
                if key not in MESSAGE_KEYS:
                    problems.append(Problem(line, "unknown_message_key", f"{where} has unknown key {key!r}"))
            role = message.get("role")
            if role is None:
                problems.append(Problem(line, "missing_role", f"{where} has no 'role'"))
                continue
            if not isinstance(role, str) or role not in ROLES:
                problems.append(
                    Problem(
                        line,
                        "invalid_role",
                        f"{where} has role {role!r}; expected system, user, assistant or tool",
                    )
                )
                continue
            tokens += self.counter.cached(role)
            name = message.get("name")
            if name is not None:
                if isinstance(name, str):
                    tokens += TOKENS_PER_NAME + self.counter.cached(name)
                else:
                    problems.append(Problem(line, "invalid_name", f"{where}.name is {_type_name(name)}"))
            has_tool_calls = False
            if role == "assistant":
                has_assistant = True
                has_tool_calls, call_tokens = self._check_tool_calls(
                    message, where, line, problems, tool_call_ids
                )
                tokens += call_tokens
            elif "weight" in message:
                problems.append(
                    Problem(line, "invalid_weight", f"{where}: 'weight' is only allowed on assistant")
                )
            if "weight" in message and role == "assistant" and message["weight"] not in (0, 1):
                problems.append(Problem(line, "invalid_weight", f"{where}.weight must be 0 or 1"))
            if role == "tool":
                call_id = message.get("tool_call_id")
                if not isinstance(call_id, str) or call_id not in tool_call_ids:
                    problems.append(
                        Problem(
                            line,
                            "invalid_tool_message",
                            f"{where} is a tool message whose tool_call_id {call_id!r} "
                            "answers no earlier assistant tool call",
                        )
                    )
            text = self._content_text(message, role, has_tool_calls, where, line, problems)
            if text:
                tokens += self._text_tokens(role, text, result)
                if role == "system" and system_text is None:
                    system_text = text
        if not has_assistant:
            problems.append(Problem(line, "missing_assistant", "no assistant message to learn from"))
        if system_text is None and self.options.require_system_prompt:
            problems.append(
                Problem(
                    line, "missing_system_prompt", "no system message (data.system_prompt.policy: require)"
                )
            )
        limit = self.options.max_tokens_per_example
        if tokens > limit:
            problems.append(
                Problem(
                    line,
                    "too_many_tokens",
                    f"{tokens} tokens, over the limit of {limit} (data.max_tokens_per_example); "
                    "shorten or drop this example",
                )
            )
        key = NO_SYSTEM_PROMPT if system_text is None else self._system_key(system_text)
        seen = result.system_prompts.get(key)
        if seen is None and len(result.system_prompts) >= MAX_DISTINCT_SYSTEM_PROMPTS:
            key = OTHER_SYSTEM_PROMPTS
            seen = result.system_prompts.get(key)
        if seen is None:
            result.system_prompts[key] = [line, 1]
        else:
            seen[1] += 1
        return tokens

    def _text_tokens(self, role: str, text: str, result: ChunkResult) -> int:
        """Tokens of a message's text. System prompts repeat, so their counts are memoised;
        assistant tokens are also summed (they are what training learns from)."""
        if role == "system":
            return self.counter.cached(text)
        n = self.counter(text)
        if role == "assistant":
            result.assistant_tokens += n
        return n

    def _check_tool_calls(
        self, message: dict[str, Any], where: str, line: int, problems: list[Problem], ids: set[str]
    ) -> tuple[bool, int]:
        calls = message.get("tool_calls")
        if calls is None:
            return ("function_call" in message, 0)
        if not isinstance(calls, list) or not calls:
            problems.append(
                Problem(line, "invalid_tool_calls", f"{where}.tool_calls must be a non-empty list")
            )
            return (False, 0)
        tokens = 0
        for n, call in enumerate(calls):
            function = call.get("function") if isinstance(call, dict) else None
            if (
                not isinstance(call, dict)
                or not isinstance(call.get("id"), str)
                or not isinstance(function, dict)
                or not isinstance(function.get("name"), str)
                or not isinstance(function.get("arguments"), str)
            ):
                problems.append(
                    Problem(
                        line,
                        "invalid_tool_calls",
                        f"{where}.tool_calls[{n}] needs 'id' and 'function' with string name and arguments",
                    )
                )
                continue
            ids.add(call["id"])
            tokens += self.counter(function["name"]) + self.counter(function["arguments"])
        return (True, tokens)

    def _content_text(
        self,
        message: dict[str, Any],
        role: str,
        has_tool_calls: bool,
        where: str,
        line: int,
        problems: list[Problem],
    ) -> str:
        """The message's text (content parts joined); records content problems."""
        if "content" not in message:
            if not has_tool_calls:
                problems.append(Problem(line, "missing_content", f"{where} has no 'content'"))
            return ""
        content = message["content"]
        if isinstance(content, str):
            if (not content or content.isspace()) and not has_tool_calls:
                problems.append(Problem(line, "empty_content", f"{where} ({role}) has empty content"))
            return content
        if content is None and has_tool_calls:
            return ""
        if not isinstance(content, list):
            problems.append(
                Problem(
                    line,
                    "invalid_content",
                    f"{where}.content is {_type_name(content)}; expected a string or a list of content parts",
                )
            )
            return ""
        texts: list[str] = []
        for n, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif (
                kind == "image_url"
                and role == "user"
                and isinstance(part.get("image_url"), dict)
                and isinstance(part["image_url"].get("url"), str)
            ):
                continue
            else:
                problems.append(
                    Problem(
                        line,
                        "invalid_content",
                        f"{where}.content[{n}] is not a text part ({{'type': 'text', 'text': ...}})"
                        + (" or a user image_url part" if kind == "image_url" else ""),
                    )
                )
        text = "".join(texts)
        if not text.strip() and not has_tool_calls and not (role == "user" and len(content) > len(texts)):
            problems.append(
                Problem(line, "empty_content", f"{where} ({role}) has no text in its content parts")
            )
        return text


def _json_reason(exc: orjson.JSONDecodeError) -> str:
    reason = str(exc.msg) if hasattr(exc, "msg") else str(exc)
    return f"{reason} at column {exc.colno}" if getattr(exc, "colno", None) else reason


def _example_hash(obj: Any) -> int:
    """A 64-bit hash of the example's canonical JSON: duplicates match despite key order/spacing."""
    try:
        canonical = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # pragma: no cover - parsed JSON always dumps
        canonical = repr(obj).encode()
    return int.from_bytes(hashlib.blake2b(canonical, digest_size=8).digest(), "little")


def _add(result: ChunkResult, options: ValidationOptions, problem: Problem) -> None:
    result.counts[problem.code] = result.counts.get(problem.code, 0) + 1
    if len(result.problems) < options.max_problems:
        result.problems.append(problem)


def check_lines(
    lines: Iterable[bytes], options: ValidationOptions, count_tokens: TokenCounter, first_line: int = 1
) -> ChunkResult:
    """Check an iterable of raw lines (for tests and small inputs)."""
    checker = ChunkChecker(options, count_tokens)
    result = ChunkResult(first_line=first_line)
    for offset, raw in enumerate(lines):
        checker.check_line(raw.rstrip(b"\n"), first_line + offset, result)
        result.lines += 1
    return result
