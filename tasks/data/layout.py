"""The content-addressed layout of dataset versions and the definition of their digest: pure.

Layout in a store::

    datasets/<name>/<digest>/train.jsonl
    datasets/<name>/<digest>/validation.jsonl   (when the version has one)
    datasets/<name>/<digest>/test.jsonl         (when the version has one)
    datasets/<name>/<digest>/manifest.json      written last: the commit marker

Canonical split file: the split's examples in input order, each line stripped of surrounding
whitespace (``\\r`` included), blank lines dropped, every line ending in ``\\n``. Each split's
``sha256`` is the sha256 of that file's bytes.

Version digest: the sha256 (hex) of the UTF-8 text ``"tuneops-dataset-v1\\n"`` followed by one
line ``"<split>\\t<split sha256>\\n"`` for each non-empty split, in the order train, validation,
test. Identical split contents therefore give the identical digest whatever the source path,
the time or the machine; any changed byte in any split gives a new one.

Split assignment (when a split is carved from ``train``): a line goes to test when
``u < test``, to validation when ``u < test + validation``, else to train, where ``u`` is the
first 8 bytes of ``blake2b(seed as 8-byte little-endian + line)`` read as a little-endian
integer divided by 2**64. A row's split depends only on its own bytes and the seed, so appending
rows never moves existing rows between splits (no test leakage across versions) and duplicate
rows always land in the same split.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from tuneops.tasks.data.types import SPLIT_NAMES

DIGEST_PREFIX = "tuneops-dataset-v1\n"
MANIFEST = "manifest.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DIGEST_PATTERN = re.compile(r"^[0-9a-f]{64}$")

TRAIN, VALIDATION, TEST = 0, 1, 2


def version_digest(split_sha256: dict[str, str]) -> str:
    """The version digest for the given ``{split: sha256}`` of its non-empty splits."""
    text = DIGEST_PREFIX + "".join(
        f"{name}\t{split_sha256[name]}\n" for name in SPLIT_NAMES if name in split_sha256
    )
    return hashlib.sha256(text.encode()).hexdigest()


def version_prefix(name: str, digest: str) -> str:
    return f"datasets/{name}/{digest}"


def split_key(name: str, digest: str, split: str) -> str:
    return f"{version_prefix(name, digest)}/{split}.jsonl"


def manifest_key(name: str, digest: str) -> str:
    return f"{version_prefix(name, digest)}/{MANIFEST}"


def assign_split(line: bytes, seed: int, validation: float, test: float) -> int:
    """Which split a canonical line belongs to: ``TRAIN``, ``VALIDATION`` or ``TEST``."""
    return split_assigner(seed, validation, test)(line)


def split_assigner(seed: int, validation: float, test: float) -> Callable[[bytes], int]:
    """:func:`assign_split` with the seed and ratios bound, for many lines: the salted hash state
    is built once and copied per line instead of hashing ``salt + line`` anew."""
    if validation <= 0 and test <= 0:
        return lambda line: TRAIN
    salted = hashlib.blake2b(digest_size=8)
    salted.update((seed & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))
    test_or_validation = test + validation

    def assign(line: bytes) -> int:
        hashed = salted.copy()
        hashed.update(line)
        u = int.from_bytes(hashed.digest(), "little") / 2**64
        if u < test:
            return TEST
        if u < test_or_validation:
            return VALIDATION
        return TRAIN

    return assign


def check_name(name: str) -> str:
    """A dataset name safe to use as a folder and an MLflow dataset name."""
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"dataset name {name!r} must start with a letter or digit and use only letters, digits, "
            "'.', '_' and '-' (at most 128 characters)"
        )
    return name
