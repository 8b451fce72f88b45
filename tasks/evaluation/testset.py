"""Read a held-out chat split (JSONL, one ``{"messages": [...]}`` per line) into test examples.

The last assistant message of each row is the reference answer; everything before it is what the
model is asked. Rows without an assistant turn cannot be scored and are an error naming the line.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuneops.errors import DatasetError
from tuneops.tasks.evaluation.types import TestExample


def read_test_split(path: Path, *, max_rows: int | None = None) -> list[TestExample]:
    """Examples from a local JSONL chat file, in file order (the first ``max_rows`` when set).

    Raises:
        DatasetError: the file is missing or a line is not a chat row ending in an assistant turn.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"{path}: no test split here", hint="pass --test-file PATH or --dataset NAME@DIGEST"
        )
    examples: list[TestExample] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if max_rows is not None and len(examples) >= max_rows:
                break
            try:
                messages = json.loads(line)["messages"]
                pairs = tuple((str(m["role"]), str(m.get("content") or "")) for m in messages)
            except (ValueError, KeyError, TypeError) as exc:
                raise DatasetError(f"{path}:{number}: not a chat row with 'messages' ({exc})") from exc
            last_assistant = max(
                (i for i, (role, _) in enumerate(pairs) if role == "assistant"), default=None
            )
            if last_assistant is None or last_assistant == 0:
                raise DatasetError(f"{path}:{number}: no assistant answer after a prompt to use as reference")
            examples.append(TestExample(len(examples), pairs[:last_assistant], pairs[last_assistant][1]))
    if not examples:
        raise DatasetError(f"{path}: the test split is empty")
    return examples
