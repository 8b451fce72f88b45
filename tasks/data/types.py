"""Our own types for versioned datasets, shared by every later stage.

A dataset version is content-addressed: ``datasets/<name>/<digest>/{train,validation,test}.jsonl``
plus ``manifest.json``. ``digest`` is the sha256 that names the version; each split file carries
its own sha256 too, which fine-tune and evaluation stages record as lineage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SplitName = Literal["train", "validation", "test"]
SPLIT_NAMES: tuple[SplitName, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class SplitFile:
    """One split of a dataset version as stored: where it is and what is in it."""

    name: SplitName
    uri: str
    sha256: str
    rows: int
    tokens: int


@dataclass(frozen=True)
class DatasetVersion:
    """An immutable, content-addressed dataset version in the data store.

    ``uri`` is the version's folder in the store (``file://...`` or ``s3://...``); ``ref`` is the
    short form users type (``NAME@DIGEST``).
    """

    name: str
    digest: str
    uri: str
    splits: dict[str, SplitFile]
    manifest: dict[str, Any] = field(default_factory=dict)
    created: bool = False

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.digest}"

    def split(self, name: SplitName) -> SplitFile | None:
        """The split called ``name``, or None when the version has none (e.g. no test split)."""
        return self.splits.get(name)
