"""Near-duplicate detection: exact, MinHash LSH (verified Jaccard) and embedding cosine."""

from __future__ import annotations

import numpy as np

from tuneops.tasks.data.dedup import (
    content_words,
    embedding_duplicates,
    exact_duplicates,
    example_text,
    lsh_duplicates,
    minhash_signatures,
)

OLD = [
    "My car was stolen from the driveway last night and I need to file a claim",
    "Water is leaking through the kitchen ceiling after the storm",
]
NEW = [
    "Last night my car got stolen from my driveway, I need to file a claim",  # paraphrase of OLD[0]
    "Hail dented the roof of my house",
    "WATER IS LEAKING THROUGH THE KITCHEN CEILING AFTER THE STORM!",  # exact after normalising
    "hail dented the roof of my house.",  # duplicate of NEW[1]
]


def test_exact_duplicates_ignore_case_and_punctuation_only() -> None:
    assert exact_duplicates(NEW, OLD) == [None, None, ("existing", 1), ("new", 1)]


def test_lsh_finds_paraphrases_of_existing_rows_and_of_earlier_new_rows() -> None:
    assert lsh_duplicates(NEW, OLD) == [("existing", 0), None, ("existing", 1), ("new", 1)]


def test_lsh_flags_nothing_below_the_threshold() -> None:
    assert lsh_duplicates(["completely different words here"], OLD) == [None]
    assert lsh_duplicates([], OLD) == [] and lsh_duplicates(["", ""], []) == [None, None]


def test_minhash_estimates_jaccard() -> None:
    a, b = frozenset(f"w{i}" for i in range(100)), frozenset(f"w{i}" for i in range(50, 150))
    sig = minhash_signatures([a, b], num_perm=512)
    estimate = float(np.mean(sig[0] == sig[1]))
    assert abs(estimate - len(a & b) / len(a | b)) < 0.08


def test_content_words_drop_stop_words_and_suffixes() -> None:
    assert content_words("The claims were denied, claiming nothing") == {"claim", "deni", "noth"}


def test_embedding_duplicates_by_cosine() -> None:
    v = np.eye(4, dtype=np.float32)
    new = np.stack([v[0], v[2], v[2] * 0.99 + v[3] * 0.01]).astype(np.float32)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    assert embedding_duplicates(new, v[:2], threshold=0.95) == [("existing", 0), None, ("new", 1)]
    assert embedding_duplicates(new, np.zeros((0, 4), np.float32), threshold=0.95) == [None, None, ("new", 1)]


def test_example_text_skips_system_messages() -> None:
    ex = {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"},
        ]
    }
    assert example_text(ex) == "U\nA"
