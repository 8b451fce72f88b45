"""Reading chat files for the traffic replayer."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneops.errors import DatasetError, UserError
from tuneops.tasks.rollout.traffic import ReplayPlan, read_chat_prompts


def test_the_reference_answer_is_dropped_and_a_logged_user_kept(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    path.write_text(
        '{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},'
        ' {"role": "assistant", "content": "A"}]}\n\n'
        '{"messages": [{"role": "user", "content": "Q2"}], "user": "alice"}\n'
    )
    first, second = read_chat_prompts(path)
    assert [m["role"] for m in first.messages] == ["system", "user"] and first.user is None
    assert second.messages == ({"role": "user", "content": "Q2"},) and second.user == "alice"


def test_rows_without_a_user_turn_are_refused_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    path.write_text('{"messages": [{"role": "assistant", "content": "A"}]}\n')
    with pytest.raises(DatasetError, match=r"chats\.jsonl:1: no user message"):
        read_chat_prompts(path)


def test_a_plan_is_bounded_and_positive() -> None:
    with pytest.raises(UserError):
        ReplayPlan(duration_seconds=0)
    with pytest.raises(UserError):
        ReplayPlan(requests=0)
