"""Validation of chat fine-tuning files (the ``validating_files`` step)."""

from __future__ import annotations

import json

import pytest

from tuneops.serving.local.chatdata import ChatFileError, Message, as_dicts, parse_chat_jsonl


def _line(messages: object) -> str:
    return json.dumps({"messages": messages})


GOOD = [
    {"role": "system", "content": "s"},
    {"role": "user", "content": "u"},
    {"role": "assistant", "content": "a"},
]


def test_valid_file_parses_and_skips_blank_lines() -> None:
    data = (_line(GOOD) + "\n\n" + _line(GOOD[1:]) + "\n").encode()
    examples = parse_chat_jsonl(data)
    assert len(examples) == 2
    assert examples[0][0] == Message("system", "s")
    assert as_dicts(examples[1]) == GOOD[1:]


def test_developer_role_and_text_parts_are_accepted() -> None:
    messages = [
        {
            "role": "developer",
            "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}],
        },
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "ok"},
    ]
    (example,) = parse_chat_jsonl(_line(messages).encode())
    assert example[0] == Message("system", "be brief")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("{not json", 1, "not valid JSON"),
        (_line(GOOD) + "\n[1, 2]", 2, '"messages" list'),
        (json.dumps({"prompt": "x"}), 1, '"messages" list'),
        (_line([{"role": "robot", "content": "x"}]), 1, "messages[0].role"),
        (
            _line([{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]),
            1,
            "messages[0].content",
        ),
        (_line([{"role": "user", "content": [{"type": "image_url"}]}]), 1, "text parts"),
        (_line(["just a string"]), 1, "messages[0] must be an object"),
        (_line([{"role": "user", "content": "no answer"}]), 1, "no assistant message"),
    ],
)
def test_problems_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ChatFileError) as info:
        parse_chat_jsonl(text.encode())
    assert info.value.line == line and words in str(info.value)
    assert str(info.value).startswith(f"line {line}:")


def test_minimum_number_of_examples() -> None:
    data = "\n".join(_line(GOOD) for _ in range(9)).encode()
    with pytest.raises(ChatFileError, match="9 examples; at least 10"):
        parse_chat_jsonl(data, min_examples=10)
    assert len(parse_chat_jsonl(data + b"\n" + _line(GOOD).encode(), min_examples=10)) == 10


def test_non_utf8_is_rejected() -> None:
    with pytest.raises(ChatFileError, match="not UTF-8"):
        parse_chat_jsonl(b"\xff\xfe")
