"""The online quality signals computed on every answer."""

from __future__ import annotations

from tuneops.serving.gateway.signals import format_ok, is_refusal
from tuneops.spec import FormatConfig


def test_no_format_rules_means_no_verdict() -> None:
    assert format_ok("anything", FormatConfig()) is None


def test_format_rules() -> None:
    config = FormatConfig(regex=r"^Decision: (approve|deny)", required_sections=["Reason:"], max_chars=80)
    assert format_ok("Decision: approve\nReason: covered", config) is True
    assert format_ok("Decision: maybe\nReason: unclear", config) is False
    assert format_ok("Decision: deny", config) is False
    assert format_ok("Decision: deny\nReason: " + "x" * 100, config) is False
    as_json = FormatConfig(json_schema={"type": "object"})
    assert format_ok('{"decision": "approve"}', as_json) is True
    assert format_ok("[1, 2]", as_json) is False
    assert format_ok("approve", as_json) is False


def test_refusals() -> None:
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert is_refusal("I cannot assist with this request.")
    assert is_refusal("fine", refusal_field="policy")
    assert not is_refusal("Decision: approve. Sorry for the wait.")
    assert not is_refusal("The policy cannot cover flood damage.")
