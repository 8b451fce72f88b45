"""Custom offline evaluators: format compliance and refusal detection.

Callables with keyword-only ``response`` so azure-ai-evaluation's ``evaluate()`` can run them next
to its own evaluators (it maps data columns to parameters by name). They return 1.0/0.0 per row,
so their mean is a compliance or refusal *rate* that gates and bootstrap intervals work on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema

# Phrases that open a refusal in English chat models; matched at the start of a sentence.
_REFUSAL_PATTERNS = (
    r"i(?:'m| am) (?:sorry|afraid)[, ]+(?:but )?i (?:can(?:no|')t|am unable|won't)",
    r"i (?:can(?:no|')t|am unable to|won't) (?:help|assist|provide|do|comply|answer)",
    r"(?:sorry|apologies)[,.!]? (?:but )?i (?:can(?:no|')t|am unable|won't)",
    r"as an ai(?: language model)?,? i (?:can(?:no|')t|am unable|don't)",
    r"i(?:'m| am) not able to (?:help|assist|provide|comply)",
)
_REFUSAL = re.compile(r"(?:^|[.!?]\s+)(?:" + "|".join(_REFUSAL_PATTERNS) + ")", re.IGNORECASE)


@dataclass(frozen=True)
class FormatComplianceEvaluator:
    """1.0 when the answer meets every configured format rule, else 0.0 with the first reason.

    Rules: ``regex`` must match (``re.search``, DOTALL); ``json_schema``: the answer is JSON that
    validates; ``required_sections``: each heading/label appears (case-insensitive); ``max_chars``.
    """

    regex: str | None = None
    json_schema: dict[str, Any] | None = None
    required_sections: tuple[str, ...] = ()
    max_chars: int | None = None
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.regex is not None:
            object.__setattr__(self, "_pattern", re.compile(self.regex, re.DOTALL))
        if self.json_schema is not None:
            jsonschema.validators.validator_for(self.json_schema).check_schema(self.json_schema)

    def problem(self, response: str) -> str | None:
        """Why ``response`` breaks the format, or None when it complies."""
        if self.max_chars is not None and len(response) > self.max_chars:
            return f"{len(response)} characters > max {self.max_chars}"
        if self._pattern is not None and not self._pattern.search(response):
            return "does not match the regex"
        lowered = response.lower()
        for section in self.required_sections:
            if section.lower() not in lowered:
                return f"missing section {section!r}"
        if self.json_schema is not None:
            try:
                document = json.loads(response)
            except ValueError:
                return "not valid JSON"
            error = jsonschema.exceptions.best_match(
                jsonschema.validators.validator_for(self.json_schema)(self.json_schema).iter_errors(document)
            )
            if error is not None:
                return f"JSON schema: {error.message}"
        return None

    def __call__(self, *, response: str) -> dict[str, Any]:
        problem = self.problem(response or "")
        return {"format": 0.0 if problem else 1.0, "format_reason": problem or ""}


class RefusalEvaluator:
    """1.0 when the answer is a refusal ("I'm sorry, but I can't ..."), else 0.0. Lower is better."""

    def __call__(self, *, response: str) -> dict[str, float]:
        return {"refusal": 1.0 if is_refusal(response or "") else 0.0}


def is_refusal(text: str) -> bool:
    """Whether ``text`` reads as a refusal to answer."""
    return bool(_REFUSAL.search(text.strip()))
