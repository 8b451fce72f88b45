"""Routing a chunk's lines to canonical split files: pure, checked against the layout's rules."""

from __future__ import annotations

import json

import orjson

from tuneops.tasks.data.layout import TEST, TRAIN, VALIDATION, assign_split
from tuneops.tasks.data.routing import RoutingPlan, inject_system_prompt, route_chunk

LINES = [json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]}).encode() for i in range(400)]


def test_lines_are_stripped_blank_lines_dropped_and_each_ends_in_a_newline():
    data = b"  " + LINES[0] + b"\r\n\n   \n\t" + LINES[1] + b"  \n" + LINES[2]  # no final newline
    routed = route_chunk(data, [5, 6, 7], RoutingPlan(only=TRAIN))
    assert routed.data == (LINES[0] + b"\n" + LINES[1] + b"\n" + LINES[2] + b"\n", b"", b"")
    assert routed.rows == (3, 0, 0)
    assert routed.tokens == (18, 0, 0)


def test_a_given_file_goes_whole_to_its_split():
    routed = route_chunk(b"\n".join(LINES[:10]), [1] * 10, RoutingPlan(only=TEST))
    assert routed.rows == (0, 0, 10) and routed.tokens == (0, 0, 10)
    assert routed.data[TEST].count(b"\n") == 10


def test_carving_follows_assign_split_and_keeps_input_order():
    plan = RoutingPlan(seed=11, validation=0.2, test=0.1)
    tokens = list(range(len(LINES)))
    routed = route_chunk(b"\n".join(LINES) + b"\n", tokens, plan)
    expected: tuple[list[bytes], list[bytes], list[bytes]] = ([], [], [])
    expected_tokens = [0, 0, 0]
    for n, line in enumerate(LINES):
        split = assign_split(line, 11, 0.2, 0.1)
        expected[split].append(line)
        expected_tokens[split] += n
    assert all(expected)  # 400 rows: every split gets some
    for split in (TRAIN, VALIDATION, TEST):
        assert routed.data[split] == b"".join(line + b"\n" for line in expected[split])
        assert routed.rows[split] == len(expected[split])
        assert routed.tokens[split] == expected_tokens[split]


def test_injection_adds_the_prompt_and_its_tokens_only_where_there_is_no_system_message():
    with_system = orjson.dumps(
        {"messages": [{"role": "system", "content": "own"}, {"role": "user", "content": "q"}]}
    )
    plan = RoutingPlan(only=TRAIN, inject="Be brief.", inject_tokens=9)
    routed = route_chunk(LINES[0] + b"\n" + with_system + b"\n", [4, 5], plan)
    first, second = routed.data[TRAIN].splitlines()
    assert orjson.loads(first)["messages"][0] == {"role": "system", "content": "Be brief."}
    assert second == with_system
    assert routed.tokens[TRAIN] == 4 + 9 + 5


def test_injection_leaves_lines_it_cannot_parse_alone():
    assert inject_system_prompt(b"{not json", "x") == (b"{not json", False)
    assert inject_system_prompt(b"[1]", "x") == (b"[1]", False)
