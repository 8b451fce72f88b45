"""The fast token counter (rs-bpe) against the reference (tiktoken, the cookbook's tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tuneops.tasks.data.tokens import count_tokens, reference_count_tokens, token_counter

EXAMPLE_TRAIN = Path(__file__).resolve().parents[3] / "examples" / "claims" / "train.jsonl"

# Text shaped like what trips BPE pre-tokenisers: contractions, digit runs, whitespace runs,
# mixed scripts, emoji with modifiers, special-token strings, zero-width and BOM characters.
TRICKY = st.lists(
    st.sampled_from(
        [
            " ",
            "  ",
            "\n",
            "\n\n",
            "\t",
            "\r\n",
            "'s",
            "'LL",
            "123",
            "4567890",
            "a",
            "Claim",
            "ü",
            "中文",
            "🙂",
            "👍🏽",
            "\u200b",
            "\ufeff",
            "<|endoftext|>",
            "<|fim_prefix|>",
            "!!",
            "...",
            "é",
            "Ж",
        ]
    )
    | st.text(max_size=12),
    max_size=40,
).map("".join)


@settings(max_examples=800, deadline=None)
@given(st.text(max_size=300))
def test_counts_equal_tiktoken_on_arbitrary_unicode(text: str):
    assert count_tokens(text) == reference_count_tokens(text)


@settings(max_examples=800, deadline=None)
@given(TRICKY)
def test_counts_equal_tiktoken_on_pre_tokeniser_edge_cases(text: str):
    assert count_tokens(text) == reference_count_tokens(text)


def test_counts_equal_tiktoken_on_every_message_of_the_example_dataset():
    counter = token_counter()
    texts = [
        message["content"]
        for split in sorted(EXAMPLE_TRAIN.parent.glob("*.jsonl"))  # train, validation, test, next-week
        for line in split.read_text(encoding="utf-8").splitlines()
        for message in json.loads(line)["messages"]
    ]
    assert len(texts) == 3 * (96 + 16 + 32 + 64)
    assert [counter(t) for t in texts] == [reference_count_tokens(t) for t in texts]


def test_long_runs_without_spaces_count_the_same():
    text = "x" * 20_000 + " word" * 2_000 + "9" * 5_000
    assert count_tokens(text) == reference_count_tokens(text)
