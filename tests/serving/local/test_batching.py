"""Batched generation: rows decoded together answer as they do alone, each stopping on its own."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from openai import OpenAI

from tuneops.serving.local.app import BATCH_SIZE_HEADER
from tuneops.serving.local.batching import Batcher, generate_batch, shared_prefix
from tuneops.serving.local.inference import LoadedModel, SamplingParams, load_model
from tuneops.serving.local.launcher import ServiceProcess
from tuneops.serving.local.testing import claims_chat_examples

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tiny_test_model: Path) -> LoadedModel:
    return load_model(tiny_test_model)


def _chats(n: int) -> list[list[dict[str, str]]]:
    """Prompts of different lengths, so the batch is really left-padded."""
    chats = []
    for i, row in enumerate(claims_chat_examples(n, seed=11)):
        system, user = row["messages"][:2]
        chats.append([system, {"role": "user", "content": user["content"] + " Thanks." * i}])
    return chats


def test_greedy_rows_answer_the_same_batched_as_alone(tiny: LoadedModel) -> None:
    chats = _chats(8)
    params = [SamplingParams(max_tokens=16 + 2 * i, temperature=0) for i in range(8)]
    params[3] = SamplingParams(max_tokens=1, temperature=0)  # leaves the batch after one token
    params[5] = SamplingParams(max_tokens=24, temperature=0, stop=("a",))  # a stop string of its own
    alone = [tiny.complete(chat, p) for chat, p in zip(chats, params, strict=True)]
    together = generate_batch(tiny, [tiny.prompt_ids(c) for c in chats], params)
    assert [r.text for r in together] == [r.text for r in alone]
    assert together == alone  # finish reasons and token counts too
    assert together[3].completion_tokens == 1 and together[3].finish_reason == "length"
    assert "a" not in together[5].text


def test_a_seed_samples_per_row(tiny: LoadedModel) -> None:
    chat = _chats(1)[0]
    seeded = SamplingParams(max_tokens=12, temperature=1.0, seed=5)
    prompt = tiny.prompt_ids(chat)
    rows = generate_batch(tiny, [prompt] * 4, [seeded, seeded, SamplingParams(max_tokens=12, seed=6), seeded])
    assert rows[0] == rows[1] == rows[3]  # the same seed, the same sample, whatever the neighbours
    assert rows[0].text == tiny.complete(chat, seeded).text  # and what it samples alone


def test_concurrent_submissions_share_batches(tiny: LoadedModel) -> None:
    chats = _chats(8)
    greedy = SamplingParams(max_tokens=16, temperature=0)
    alone = [tiny.complete(chat, greedy).text for chat in chats]
    batcher = Batcher(tiny, window=0.2)
    batcher.submit(tiny.prompt_ids(chats[0]), greedy)
    batcher._last_size = 8  # as after a full batch: the next one waits for 8
    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda c: batcher.submit(tiny.prompt_ids(c), greedy).text, chats))
    assert texts == alone
    assert list(batcher.batch_sizes) == [1, 8]
    batcher.close()


def test_the_service_answers_the_same_one_by_one_and_concurrently(local_service: ServiceProcess) -> None:
    client = OpenAI(base_url=local_service.base_url, api_key="unused", max_retries=0)

    def ask(chat: list[dict[str, str]]) -> tuple[str, int]:
        raw = client.chat.completions.with_raw_response.create(
            model="tuneops-tiny",
            messages=chat,  # type: ignore[arg-type]
            max_tokens=20,
            temperature=0,
        )
        return raw.parse().choices[0].message.content or "", int(raw.headers[BATCH_SIZE_HEADER])

    chats = _chats(8)
    one_by_one = [ask(chat) for chat in chats]
    assert {size for _, size in one_by_one} == {1}
    sizes: list[int] = []
    for _ in range(3):  # later rounds arrive while the service expects a full batch
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, chats))
        assert [text for text, _ in answers] == [text for text, _ in one_by_one]
        sizes += [size for _, size in answers]
    assert max(sizes) > 1, sizes  # concurrent requests really were decoded together


@pytest.mark.parametrize(
    ("prompts", "expected"),
    [
        ([[1, 2, 3, 4], [1, 2, 3, 5]], 3),
        ([[1, 2, 3], [1, 2, 3, 4]], 2),  # the shorter prompt keeps one token of its own
        ([[1, 2], [3, 4]], 0),
        ([[7, 8, 9]], 2),
    ],
)
def test_shared_prefix_leaves_every_row_a_token(prompts: list[list[int]], expected: int) -> None:
    assert shared_prefix(prompts) == expected
