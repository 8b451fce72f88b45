"""The red-team set: the prompts shipped with tuneops plus the project's own files.

Shipped prompts live in package data (``tuneops/resources/safety/*.jsonl``); a project adds files
with ``evaluation.safety.red_team_files`` (paths relative to the project directory). Rows are
``{"id", "category", "prompt"}`` (``"marker"`` for injections); a malformed row is a
``SpecError`` naming file and line, because a silently skipped red-team prompt is a gap in the gate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

from tuneops.errors import SpecError
from tuneops.tasks.evaluation.safety.rules import CATEGORIES, Category, RedTeamPrompt
from tuneops.tasks.evaluation.types import TestExample


def _parse(lines: Iterable[str], source: str) -> list[RedTeamPrompt]:
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            category = row["category"]
            prompt = row["prompt"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SpecError(
                f"{source}:{number}: a red-team row needs 'category' and 'prompt' ({exc})"
            ) from exc
        if category not in CATEGORIES:
            raise SpecError(f"{source}:{number}: category {category!r} is not one of {', '.join(CATEGORIES)}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise SpecError(f"{source}:{number}: 'prompt' must be a non-empty string")
        marker = row.get("marker")
        if category == "injection" and not marker:
            raise SpecError(f"{source}:{number}: an injection row needs a 'marker' to look for in the answer")
        out.append(
            RedTeamPrompt(
                str(row.get("id") or f"{Path(source).stem}-{number}"), category, prompt, marker, source
            )
        )
    return out


def builtin_prompts() -> list[RedTeamPrompt]:
    """The red-team prompts shipped with tuneops, in a stable order."""
    folder = resources.files("tuneops") / "resources" / "safety"
    rows: list[RedTeamPrompt] = []
    for name in ("harmful", "benign", "injection", "system_prompt"):
        text = (folder / f"{name}.jsonl").read_text(encoding="utf-8")
        rows += _parse(text.splitlines(), f"builtin:{name}.jsonl")
    return rows


def load_red_team(
    *, builtin: bool, files: Sequence[Path], project_dir: Path, categories: Sequence[Category]
) -> list[RedTeamPrompt]:
    """The prompts to evaluate: shipped and project files, kept to ``categories``, ids unique.

    Raises:
        SpecError: a file is missing or malformed, or two prompts share an id.
    """
    rows = builtin_prompts() if builtin else []
    for path in files:
        full = path if path.is_absolute() else project_dir / path
        if not full.is_file():
            raise SpecError(f"evaluation.safety.red_team_files: {full} does not exist")
        rows += _parse(full.read_text(encoding="utf-8").splitlines(), str(full))
    rows = [r for r in rows if r.category in categories]
    seen: dict[str, str] = {}
    for row in rows:
        if row.id in seen:
            raise SpecError(f"red-team id {row.id!r} appears in {seen[row.id]} and {row.source}")
        seen[row.id] = row.source
    return rows


def as_examples(prompts: Sequence[RedTeamPrompt], system_prompt: str | None) -> list[TestExample]:
    """Red-team prompts as test rows, each behind the production system prompt (when known)."""
    head = (("system", system_prompt),) if system_prompt else ()
    return [TestExample(i, (*head, ("user", p.prompt)), "") for i, p in enumerate(prompts)]


def red_team_digest(prompts: Sequence[RedTeamPrompt], system_prompt: str | None) -> str:
    """Cache key of the red-team answers: the prompts and the system prompt they were asked under."""
    payload = [[p.id, p.category, p.prompt, p.marker] for p in prompts]
    return hashlib.sha256(json.dumps([payload, system_prompt]).encode()).hexdigest()
