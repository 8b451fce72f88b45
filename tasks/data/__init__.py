"""The data stage: validate chat JSONL, version it content-addressed, hand splits to later stages.

Public API (imported lazily so that ``tuneops.tasks.data.validate`` stays light enough for
worker processes):

- ``validate_file(path, options) -> ValidationReport``
- ``version_from_spec(spec, store=..., home=...) -> DatasetVersion``
- ``version_dataset(spec, settings) -> DatasetVersion`` (Prefect task)
- ``links_from_version(version) -> tuple[DatasetLink, ...]`` (what lineage records of a version)
- ``materialize_split(version, split, settings) -> Path``
- ``list_versions(store, name=None)``, ``store_for(settings)``
- ``resolve_dataset_version(store, "NAME[@DIGEST]")``
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "validate_file": "tuneops.tasks.data.scan",
    "version_from_spec": "tuneops.tasks.data.version",
    "version_files": "tuneops.tasks.data.version",
    "version_dataset": "tuneops.tasks.data.tasks",
    "links_from_version": "tuneops.tasks.data.tracking",
    "materialize_split": "tuneops.tasks.data.catalog",
    "list_versions": "tuneops.tasks.data.catalog",
    "resolve_dataset_version": "tuneops.tasks.data.catalog",
    "store_for": "tuneops.tasks.data.catalog",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
