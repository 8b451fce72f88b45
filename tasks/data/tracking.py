"""What the data stage hands to lineage: each split of a version as the registry's ``DatasetLink``.

The registry records links (as MLflow dataset inputs of the fine-tune, evaluation and
registration runs) without knowing the data stage's types; this is the one place that maps a
``DatasetVersion`` into them. No MLflow here: logging belongs to ``tuneops.registry.tracking``.
"""

from __future__ import annotations

from tuneops.registry.types import DatasetLink
from tuneops.tasks.data.types import DatasetVersion


def links_from_version(version: DatasetVersion) -> tuple[DatasetLink, ...]:
    """The dataset links of a data-stage ``DatasetVersion``, one per split it has."""
    return tuple(
        DatasetLink(
            split=split.name,
            digest=split.sha256,
            uri=split.uri,
            dataset_name=version.name,
            version_digest=version.digest,
            version_uri=version.uri,
            rows=split.rows,
            tokens=split.tokens,
        )
        for split in version.splits.values()
    )
