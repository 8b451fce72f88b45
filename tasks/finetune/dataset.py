"""Getting the dataset version a fine-tune trains on, and local files to upload from it.

The data stage owns versioning and the store; this module only asks it. ``NAME@DIGEST`` (or a
unique digest prefix, or ``NAME`` for the newest) picks an existing version; without one, the
spec's data is versioned now (a no-op when identical bytes were versioned before).
"""

from __future__ import annotations

from pathlib import Path

from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec
from tuneops.tasks.data.types import DatasetVersion


def resolve_dataset(spec: Spec, settings: TuneopsSettings, ref: str | None = None) -> DatasetVersion:
    """``ref``'s version from the data store, or the spec's data versioned now."""
    from tuneops.tasks.data import resolve_dataset_version, store_for, version_dataset

    if ref:
        return resolve_dataset_version(store_for(settings), ref)  # type: ignore[no-any-return]
    return version_dataset(spec, settings)  # type: ignore[no-any-return]


def local_split_path(version: DatasetVersion, split: str, settings: TuneopsSettings) -> Path:
    """A local file holding the split's bytes (the store's own file, or a checked download)."""
    from tuneops.tasks.data import materialize_split

    return Path(materialize_split(version, split, settings))
