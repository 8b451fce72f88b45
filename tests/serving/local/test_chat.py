"""Chat completion request validation and response shapes (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from tuneops.serving.local.chat import ChunkFactory, completion, parse_chat_request
from tuneops.serving.local.inference import TokenLogprob, TopLogprob
from tuneops.serving.openai_wire import ApiError
from tuneops.testing.reference.openapi import assert_matches

USER = [{"role": "user", "content": "hi"}]


def test_defaults_follow_openai() -> None:
    request = parse_chat_request({"model": "m", "messages": USER})
    assert (request.temperature, request.top_p, request.max_tokens, request.seed) == (1.0, 1.0, None, None)
    assert request.stop == () and not request.stream and not request.include_usage
    assert (request.logprobs, request.top_logprobs) == (False, 0)
    assert request.messages == ({"role": "user", "content": "hi"},)


def test_all_parameters_are_read() -> None:
    request = parse_chat_request(
        {
            "model": "m",
            "temperature": 0,
            "top_p": 0.5,
            "max_completion_tokens": 7,
            "seed": 3,
            "stop": ["\n"],
            "stream": True,
            "stream_options": {"include_usage": True},
            "n": 1,
            "user": "ignored",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "sys"}]},
                {"role": "assistant", "content": None},
                *USER,
            ],
        }
    )
    assert (request.temperature, request.top_p, request.max_tokens, request.seed) == (0.0, 0.5, 7, 3)
    assert request.stop == ("\n",) and request.stream and request.include_usage
    assert request.messages[0] == {"role": "system", "content": "sys"}
    assert request.messages[1] == {"role": "assistant", "content": ""}
    assert parse_chat_request({"model": "m", "messages": USER, "max_tokens": 5, "stop": "x"}).stop == ("x",)
    asked = parse_chat_request({"model": "m", "messages": USER, "logprobs": True, "top_logprobs": 20})
    assert (asked.logprobs, asked.top_logprobs) == (True, 20)
    nulls = parse_chat_request({"model": "m", "messages": USER, "logprobs": None, "top_logprobs": None})
    assert (nulls.logprobs, nulls.top_logprobs) == (False, 0)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER}, "model"),
        ({"model": "", "messages": USER}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": ["hi"]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content",
        ),
        ({"model": "m", "messages": USER, "temperature": 3}, "temperature"),
        ({"model": "m", "messages": USER, "temperature": "hot"}, "temperature"),
        ({"model": "m", "messages": USER, "top_p": 1.5}, "top_p"),
        ({"model": "m", "messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": USER, "max_tokens": "ten"}, "max_tokens"),
        ({"model": "m", "messages": USER, "n": 2}, "n"),
        ({"model": "m", "messages": USER, "seed": "s"}, "seed"),
        ({"model": "m", "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "m", "messages": USER, "stream": "yes"}, "stream"),
        ({"model": "m", "messages": USER, "stream_options": 1}, "stream_options"),
        ({"model": "m", "messages": USER, "logprobs": "yes"}, "logprobs"),
        ({"model": "m", "messages": USER, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"model": "m", "messages": USER, "logprobs": True, "top_logprobs": -1}, "top_logprobs"),
        ({"model": "m", "messages": USER, "logprobs": True, "top_logprobs": True}, "top_logprobs"),
        ({"model": "m", "messages": USER, "top_logprobs": 2}, "top_logprobs"),  # needs logprobs: true
        ({"model": "m", "messages": USER, "logprobs": False, "top_logprobs": 2}, "top_logprobs"),
    ],
)
def test_bad_requests_name_the_parameter(body: dict[str, object], param: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_chat_request(body)
    assert info.value.param == param and info.value.status_code == 400


def test_body_must_be_an_object() -> None:
    with pytest.raises(ApiError):
        parse_chat_request([1, 2])


def test_completion_shape() -> None:
    body = completion("m", "hello", "stop", 5, 2)
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "hello",
        "refusal": None,
        "annotations": [],
    }
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def test_chunks_share_id_and_carry_usage_last() -> None:
    chunks = ChunkFactory("m", include_usage=True)
    first, middle, end, usage = (
        chunks.delta("", role=True),
        chunks.delta("hi"),
        chunks.finish("length"),
        chunks.usage(3, 1),
    )
    assert len({c["id"] for c in (first, middle, end, usage)}) == 1
    assert first["choices"][0]["delta"] == {"content": "", "role": "assistant"}
    assert end["choices"][0]["finish_reason"] == "length" and end["usage"] is None
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 4
    assert "usage" not in ChunkFactory("m", include_usage=False).delta("x")


TOKENS = (
    TokenLogprob("hel", -0.5, b"hel", (TopLogprob("hel", -0.5, b"hel"), TopLogprob("he", -1.5, b"he"))),
    TokenLogprob("\ufffd", -2.0, b"\xc3", ()),  # half of a two-byte character
)


def test_logprobs_take_openais_shape(schemas: dict[str, Any]) -> None:
    body = completion("m", "hel\u00e9", "length", 5, 2, TOKENS)
    assert body["choices"][0]["logprobs"] == {
        "content": [
            {
                "token": "hel",
                "logprob": -0.5,
                "bytes": [104, 101, 108],
                "top_logprobs": [
                    {"token": "hel", "logprob": -0.5, "bytes": [104, 101, 108]},
                    {"token": "he", "logprob": -1.5, "bytes": [104, 101]},
                ],
            },
            {"token": "\ufffd", "logprob": -2.0, "bytes": [0xC3], "top_logprobs": []},
        ],
        "refusal": None,
    }
    assert_matches("CreateChatCompletionResponse", body)
    assert completion("m", "x", "stop", 1, 1)["choices"][0]["logprobs"] is None
    chunks = ChunkFactory("m", include_usage=False, logprobs=True)
    role, delta = chunks.delta("", role=True), chunks.delta("hel", tokens=TOKENS[:1])
    assert role["choices"][0]["logprobs"] is None
    assert delta["choices"][0]["logprobs"]["content"][0]["bytes"] == [104, 101, 108]
    for chunk in (role, delta):
        assert_matches("CreateChatCompletionStreamResponse", chunk)
    assert (
        ChunkFactory("m", include_usage=False).delta("hel", tokens=TOKENS)["choices"][0]["logprobs"] is None
    )
