"""Helpers of the data-stage tests: small valid chat examples and JSONL writers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SYSTEM = "You are a claims assistant. Answer in three lines."


def example(i: int, *, system: str | None = SYSTEM, answer: str | None = None) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": f"Claim {i}: my car was scratched in a car park."})
    messages.append(
        {"role": "assistant", "content": answer or f"Decision: APPROVE\nReason: case {i}.\nNext step: pay."}
    )
    return {"messages": messages}


def write_jsonl(path: Path, rows: list[Any], *, raw: list[str] | None = None) -> Path:
    lines = [json.dumps(row) for row in rows] + (raw or [])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def valid_rows(n: int, **kwargs: Any) -> list[dict[str, Any]]:
    return [example(i, **kwargs) for i in range(n)]
