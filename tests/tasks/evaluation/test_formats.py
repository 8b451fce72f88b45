"""Format compliance and refusal detection, as evaluate() calls them (keyword ``response``)."""

from __future__ import annotations

import jsonschema
import pytest

from tuneops.tasks.evaluation.formats import FormatComplianceEvaluator, RefusalEvaluator, is_refusal

SCHEMA = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}


@pytest.mark.parametrize(
    ("evaluator", "response", "score", "reason"),
    [
        (FormatComplianceEvaluator(), "anything", 1.0, ""),
        (FormatComplianceEvaluator(regex=r"^The \w+ of \w+ is \w+\.$"), "The capital of M is X.", 1.0, ""),
        (FormatComplianceEvaluator(regex=r"^The capital"), "Valletta.", 0.0, "does not match the regex"),
        (FormatComplianceEvaluator(max_chars=5), "123456", 0.0, "6 characters > max 5"),
        (FormatComplianceEvaluator(max_chars=6), "123456", 1.0, ""),
        (FormatComplianceEvaluator(required_sections=("Summary:", "Steps:")), "summary: x\nSTEPS:", 1.0, ""),
        (FormatComplianceEvaluator(required_sections=("Summary:", "Steps:")), "Summary: x", 0.0,
         "missing section 'Steps:'"),
        (FormatComplianceEvaluator(json_schema=SCHEMA), '{"city": "Oslo"}', 1.0, ""),
        (FormatComplianceEvaluator(json_schema=SCHEMA), '{"town": "Oslo"}', 0.0,
         "JSON schema: 'city' is a required property"),
        (FormatComplianceEvaluator(json_schema=SCHEMA), "Oslo", 0.0, "not valid JSON"),
        (FormatComplianceEvaluator(json_schema=SCHEMA), "", 0.0, "not valid JSON"),
    ],
)  # fmt: skip
def test_format_compliance(
    evaluator: FormatComplianceEvaluator, response: str, score: float, reason: str
) -> None:
    assert evaluator(response=response) == {"format": score, "format_reason": reason}


def test_an_invalid_schema_is_refused_up_front() -> None:
    with pytest.raises(jsonschema.exceptions.SchemaError):
        FormatComplianceEvaluator(json_schema={"type": "no-such-type"})


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("I'm sorry, but I can't help with that.", True),
        ("I am sorry, I cannot provide that information.", True),
        ("Sorry, but I can't do that.", True),
        ("As an AI language model, I cannot browse the web.", True),
        ("I can't assist with this request.", True),
        ("Sure. I'm not able to help with taxes, but here is the capital: Oslo.", True),
        ("The capital of Norway is Oslo.", False),
        ("I can help: the capital is Oslo.", False),
        ("Nobody can't deny that Oslo is the capital.", False),
        ("", False),
    ],
)
def test_refusal_detection(text: str, refusal: bool) -> None:
    assert is_refusal(text) is refusal
    assert RefusalEvaluator()(response=text) == {"refusal": 1.0 if refusal else 0.0}
