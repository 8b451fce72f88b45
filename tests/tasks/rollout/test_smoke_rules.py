"""Blue-green's pure smoke verdict: the live endpoint must answer what was evaluated."""

from __future__ import annotations

import pytest

from tuneops.tasks.rollout.rules import SmokeCase, judge_smoke


def case(row: int, expected: str, answered: str | None, **kw: str | None) -> SmokeCase:
    return SmokeCase(row, expected, answered, kw.get("error"), kw.get("served_version", "2"))


def test_identical_answers_pass_whitespace_aside() -> None:
    verdict = judge_smoke([case(0, "A=1.", "A=1. "), case(1, "B  x", "B x")], version="2")
    assert verdict.passed and verdict.matched == 2 and "2/2 answers identical" in verdict.summary()


def test_one_different_answer_refuses_the_switch_and_names_the_row() -> None:
    verdict = judge_smoke([case(0, "A", "A"), case(7, "B", "C")], version="2")
    assert not verdict.passed and verdict.mismatched_rows == (7,)
    assert "differing rows: 7" in verdict.summary()


def test_a_tolerance_can_be_given_but_failed_requests_never_match() -> None:
    cases = [case(i, "A", "A") for i in range(9)] + [case(9, "A", None, error="APIConnectionError")]
    assert judge_smoke(cases, version="2", min_match_share=0.9).passed
    assert not judge_smoke(cases, version="2").passed


def test_answers_from_another_version_fail_even_when_identical() -> None:
    verdict = judge_smoke([case(0, "A", "A", served_version="1")], version="2")
    assert not verdict.passed and "not 2" in verdict.summary()


def test_nothing_to_replay_is_never_a_pass() -> None:
    assert not judge_smoke([], version="2").passed
    with pytest.raises(ValueError):
        judge_smoke([case(0, "A", "A")], version="2", min_match_share=0)
