"""Token log-probabilities: what the service reports is what one forward pass of the model gives.

The service decodes token by token with a KV cache (batched or alone); the check here is a single
plain ``transformers`` forward pass over prompt + answer, read independently of the service's code:
the prompt through the tokenizer's chat template, the answer's token ids back from the ``bytes``
the service reported (byte-level BPE: each byte is one character of GPT-2's alphabet).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tuneops.serving.local.app import BATCH_SIZE_HEADER
from tuneops.serving.local.batching import generate_batch
from tuneops.serving.local.chat import choice_logprobs
from tuneops.serving.local.inference import LoadedModel, SamplingParams, load_model
from tuneops.serving.local.launcher import ServiceProcess
from tuneops.serving.local.testing import claims_chat_examples
from tuneops.serving.local.tinymodel import CHATML_TEMPLATE
from tuneops.testing.reference.openapi import assert_matches

pytestmark = pytest.mark.slow
TOLERANCE = 1e-4  # a KV-cached, possibly batched decode vs one full pass: float rounding only


class Reference:
    """The tiny model loaded with plain transformers: log-probabilities from one forward pass."""

    def __init__(self, folder: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
        self.alphabet = bytes_to_unicode()

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        template = getattr(self.tokenizer, "chat_template", None) or CHATML_TEMPLATE
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=True
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def token_id(self, raw: list[int]) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids("".join(self.alphabet[b] for b in raw))
        assert isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id, raw
        return token_id

    def check(self, messages: list[dict[str, str]], content: list[dict[str, Any]], top: int = 0) -> None:
        """Every entry's logprob (and top alternatives) equals the full forward pass's at its position."""
        prompt = self.prompt_ids(messages)
        answer = [self.token_id(entry["bytes"]) for entry in content]
        with self.torch.no_grad():
            logits = self.model(self.torch.tensor([prompt + answer])).logits[0].float()
        logprobs = self.torch.log_softmax(logits, dim=-1)
        for i, (entry, token) in enumerate(zip(content, answer, strict=True)):
            position = logprobs[len(prompt) - 1 + i]
            assert entry["logprob"] == pytest.approx(float(position[token]), abs=TOLERANCE)
            assert entry["token"] == bytes(entry["bytes"]).decode("utf-8", errors="replace")
            values, ids = self.torch.topk(position, top) if top else ([], [])
            assert [self.token_id(t["bytes"]) for t in entry["top_logprobs"]] == [int(i) for i in ids]
            assert [t["logprob"] for t in entry["top_logprobs"]] == pytest.approx(
                [float(v) for v in values], abs=TOLERANCE
            )


@pytest.fixture(scope="module")
def reference(tiny_test_model: Path) -> Reference:
    return Reference(tiny_test_model)


@pytest.fixture(scope="module")
def tiny(tiny_test_model: Path) -> LoadedModel:
    return load_model(tiny_test_model)


def _chats(n: int) -> list[list[dict[str, str]]]:
    rows = claims_chat_examples(n, seed=3)
    chats = []
    for i, row in enumerate(rows):
        system, user = row["messages"][:2]
        chats.append([system, {"role": "user", "content": user["content"] + " Thanks." * i}])
    return chats


def test_the_service_reports_the_models_logprobs(
    local_service: ServiceProcess, reference: Reference, schemas: dict[str, Any]
) -> None:
    client = OpenAI(base_url=local_service.base_url, api_key="unused", max_retries=0)
    chat = _chats(1)[0]
    raw = client.chat.completions.with_raw_response.create(
        model="tuneops-tiny",
        messages=chat,
        max_tokens=12,
        temperature=0,
        logprobs=True,
        top_logprobs=2,  # type: ignore[arg-type]
    )
    body = json.loads(raw.content)
    assert_matches("CreateChatCompletionResponse", body)
    reply = raw.parse()
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content and logprobs.refusal is None
    content = [entry.model_dump() for entry in logprobs.content]
    assert len(content) == reply.usage.completion_tokens  # type: ignore[union-attr]  # no stop string here
    assert "".join(e["token"] for e in content) == reply.choices[0].message.content
    assert all(e["token"] == e["top_logprobs"][0]["token"] for e in content)  # greedy takes the argmax
    reference.check(chat, content, top=2)

    sampled = client.chat.completions.create(
        model="tuneops-tiny",
        messages=chat,
        max_tokens=12,
        temperature=1.0,
        seed=7,
        logprobs=True,  # type: ignore[arg-type]
    )
    entries = [e.model_dump() for e in sampled.choices[0].logprobs.content]  # type: ignore[union-attr]
    assert all(e["top_logprobs"] == [] for e in entries)
    reference.check(chat, entries)  # the sampled tokens' own probabilities, not the temperature's

    plain = client.chat.completions.create(model="tuneops-tiny", messages=chat, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    assert plain.choices[0].logprobs is None
    assert plain.choices[0].message.content == reply.choices[0].message.content


def test_streamed_chunks_carry_the_tokens_they_send(
    local_service: ServiceProcess, reference: Reference, schemas: dict[str, Any]
) -> None:
    chat = _chats(2)[1]
    request = {"model": "tuneops-tiny", "messages": chat, "max_tokens": 14, "temperature": 0}
    with httpx.Client(base_url=local_service.base_url, timeout=120) as http:
        whole = http.post("/chat/completions", json={**request, "logprobs": True, "top_logprobs": 3}).json()
        with http.stream(
            "POST", "/chat/completions", json={**request, "logprobs": True, "top_logprobs": 3, "stream": True}
        ) as stream:
            lines = [line for line in stream.iter_lines() if line]
        with http.stream("POST", "/chat/completions", json={**request, "stream": True}) as stream:
            plain = [json.loads(line[6:]) for line in stream.iter_lines() if line and line != "data: [DONE]"]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    streamed: list[dict[str, Any]] = []
    text = ""
    for chunk in chunks:
        assert_matches("CreateChatCompletionStreamResponse", chunk)
        choice = chunk["choices"][0]
        if choice["delta"].get("content"):
            streamed += choice["logprobs"]["content"]
            text += choice["delta"]["content"]
    expected = whole["choices"][0]["logprobs"]["content"]
    assert text == whole["choices"][0]["message"]["content"] == "".join(t["token"] for t in streamed)
    assert [t["token"] for t in streamed] == [t["token"] for t in expected]
    assert [t["logprob"] for t in streamed] == pytest.approx([t["logprob"] for t in expected], abs=TOLERANCE)
    reference.check(chat, streamed, top=3)
    assert all(chunk["choices"][0]["logprobs"] is None for chunk in plain if chunk["choices"])


def test_batched_rows_report_their_own_logprobs(tiny: LoadedModel, reference: Reference) -> None:
    chats = _chats(4)
    params = [
        SamplingParams(max_tokens=10, temperature=0, logprobs=True, top_logprobs=1),
        SamplingParams(max_tokens=10, temperature=0),  # a neighbour that did not ask
        SamplingParams(max_tokens=6, temperature=1.0, seed=3, logprobs=True),
        SamplingParams(max_tokens=10, temperature=0, logprobs=True, stop=(" ",)),
    ]
    rows = generate_batch(tiny, [tiny.prompt_ids(c) for c in chats], params)
    assert rows[1].logprobs is None
    for chat, row, param in zip(chats, rows, params, strict=True):
        if row.logprobs is None:
            continue
        content = choice_logprobs(row.logprobs)["content"]
        reference.check(chat, content, top=param.top_logprobs)
        joined = "".join(t.token for t in row.logprobs)
        assert joined.startswith(row.text) and len(row.logprobs) <= row.completion_tokens
    alone = tiny.complete(chats[0], params[0])
    assert [t.token for t in alone.logprobs or ()] == [t.token for t in rows[0].logprobs or ()]


def test_concurrent_requests_get_logprobs_from_the_batch(
    local_service: ServiceProcess, reference: Reference
) -> None:
    client = OpenAI(base_url=local_service.base_url, api_key="unused", max_retries=0)
    chats = _chats(6)

    def ask(chat: list[dict[str, str]]) -> tuple[list[dict[str, Any]], int]:
        raw = client.chat.completions.with_raw_response.create(
            model="tuneops-tiny",
            messages=chat,
            max_tokens=10,
            temperature=0,
            logprobs=True,  # type: ignore[arg-type]
        )
        content = raw.parse().choices[0].logprobs.content  # type: ignore[union-attr]
        return [e.model_dump() for e in content or ()], int(raw.headers[BATCH_SIZE_HEADER])

    ask(chats[0])
    sizes: list[int] = []
    for _ in range(3):
        with ThreadPoolExecutor(len(chats)) as pool:
            answers = list(pool.map(ask, chats))
        sizes += [size for _, size in answers]
        for chat, (content, _) in zip(chats, answers, strict=True):
            reference.check(chat, content)
    assert max(sizes) > 1, sizes  # some really were decoded together
