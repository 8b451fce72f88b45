"""Online quality signals computed on each answer: format compliance and a refusal flag.

Pure and cheap (they run on every request). The format check is a minimal, serving-side
reading of the spec's ``evaluation.format``: regex, required sections, length, and "parses as a
JSON object" when a JSON schema is set (the full schema check is the evaluation stage's, which
serving may not import). ``None`` means "no rule to judge by", never "failed".
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from tuneops.spec import FormatConfig

_REFUSAL = re.compile(
    r"^\s*(?:i'?m sorry|i am sorry|sorry,|i can(?:no|')t (?:help|assist|do|provide|answer|comply)"
    r"|i cannot (?:help|assist|do|provide|answer|comply)|i won'?t be able|as an ai\b|i'?m unable to"
    r"|i am unable to|i'?m not able to)",
    re.IGNORECASE,
)


def is_refusal(text: str, refusal_field: object = None) -> bool:
    """True when the model declined: OpenAI's ``message.refusal`` is set, or the answer opens like one."""
    if isinstance(refusal_field, str) and refusal_field.strip():
        return True
    return bool(_REFUSAL.match(text))


@lru_cache(maxsize=32)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.DOTALL)


def has_format_rules(config: FormatConfig) -> bool:
    """True when the spec's ``evaluation.format`` asks for anything at all."""
    return bool(config.regex or config.json_schema or config.required_sections or config.max_chars)


def format_ok(text: str, config: FormatConfig) -> bool | None:
    """Whether ``text`` follows the spec's answer format; None when no format is specified."""
    if not has_format_rules(config):
        return None
    if config.max_chars is not None and len(text) > config.max_chars:
        return False
    if config.regex and _compiled(config.regex).search(text) is None:
        return False
    if any(section not in text for section in config.required_sections):
        return False
    if config.json_schema:
        try:
            parsed = json.loads(text)
        except ValueError:
            return False
        wanted = config.json_schema.get("type", "object")
        kinds = {"object": dict, "array": list, "string": str}
        if wanted in kinds and not isinstance(parsed, kinds[wanted]):
            return False
    return True
