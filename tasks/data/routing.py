"""Routing a chunk of input lines to canonical split files, in the same pass that validates it.

Versioning used to read a file twice: once to validate, once to write the splits. Routing runs
where the chunk is validated (a worker process for large files), so the file is read once and
the per-line work (stripping, the split hash, injecting a system prompt) is spread over the
cores; the main process only hashes and writes the routed bytes, in input order.

The output follows :mod:`tuneops.tasks.data.layout` exactly: lines stripped, blank lines dropped,
each line ending in ``\\n``, carved splits assigned by :func:`~tuneops.tasks.data.layout.assign_split`.
Routing trusts the chunk to be valid; a file with errors is never committed, so what routing
makes of an invalid line does not matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from tuneops.tasks.data.layout import TEST, TRAIN, VALIDATION, split_assigner

TOKENS_PER_SYSTEM_MESSAGE = 3  # the per-message overhead of the cookbook's token count


@dataclass(frozen=True)
class RoutingPlan:
    """Where one source file's lines go.

    ``only`` sends every line to one split (a validation/test file the user gave); otherwise
    lines are carved from train by ``seed``/``validation``/``test``. ``inject`` is a system prompt
    added to examples that have none, and ``inject_tokens`` what it adds to an example's count.
    """

    only: int | None = None
    seed: int = 0
    validation: float = 0.0
    test: float = 0.0
    inject: str | None = None
    inject_tokens: int = 0


@dataclass
class RoutedChunk:
    """A chunk's canonical lines per split (index ``TRAIN``, ``VALIDATION``, ``TEST``)."""

    data: tuple[bytes, bytes, bytes]
    rows: tuple[int, int, int]
    tokens: tuple[int, int, int]


def route_lines(lines: Sequence[bytes], example_tokens: Sequence[int], plan: RoutingPlan) -> RoutedChunk:
    """Route a chunk's raw lines; ``example_tokens`` holds one count per non-blank line."""
    parts: tuple[list[bytes], list[bytes], list[bytes]] = ([], [], [])
    tokens = [0, 0, 0]
    only = plan.only if plan.only is not None else TRAIN
    assign = split_assigner(plan.seed, plan.validation, plan.test) if plan.only is None else None
    n = 0
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        count = example_tokens[n] if n < len(example_tokens) else 0
        n += 1
        if plan.inject is not None:
            line, added = inject_system_prompt(line, plan.inject)
            count += plan.inject_tokens if added else 0
        target = assign(line) if assign is not None else only
        parts[target].append(line)
        tokens[target] += count
    rows = tuple(len(part) for part in parts)
    for part in parts:
        if part:
            part.append(b"")  # so the join ends every line, the last included, with a newline
    return RoutedChunk(
        data=(b"\n".join(parts[TRAIN]), b"\n".join(parts[VALIDATION]), b"\n".join(parts[TEST])),
        rows=(rows[TRAIN], rows[VALIDATION], rows[TEST]),
        tokens=(tokens[TRAIN], tokens[VALIDATION], tokens[TEST]),
    )


def route_chunk(data: bytes, example_tokens: Sequence[int], plan: RoutingPlan) -> RoutedChunk:
    """:func:`route_lines` on the whole lines of ``data``."""
    return route_lines(data.split(b"\n"), example_tokens, plan)


def inject_system_prompt(line: bytes, text: str) -> tuple[bytes, bool]:
    """``line`` with ``text`` as its first (system) message, unless it has a system message."""
    try:
        example = orjson.loads(line)
    except orjson.JSONDecodeError:  # invalid lines are reported by validation, never committed
        return line, False
    messages = example.get("messages") if isinstance(example, dict) else None
    if not isinstance(messages, list) or any(
        isinstance(m, dict) and m.get("role") == "system" for m in messages
    ):
        return line, False
    example["messages"] = [{"role": "system", "content": text}, *messages]
    return orjson.dumps(example), True
