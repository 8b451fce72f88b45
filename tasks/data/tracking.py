"""Dataset lineage in MLflow: each split of a version logged as a run input, plus its manifest.

MLflow limits a dataset digest to 36 characters (``MAX_DATASET_DIGEST_SIZE``; a VARCHAR(36) on
PostgreSQL), so the logged digest is the first 36 hex digits of the split's sha256; the full
sha256 of the split and the version digest ride along as input tags. Find the runs that used a
split with ``search_runs(filter_string=f"dataset.digest = '{mlflow_digest(sha256)}'")``.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

from tuneops.errors import RegistryError
from tuneops.tasks.data.types import SPLIT_NAMES, DatasetVersion

MLFLOW_DIGEST_LENGTH = 36


def mlflow_digest(sha256: str) -> str:
    """The form of a sha256 that fits MLflow's dataset digest column."""
    return sha256[:MLFLOW_DIGEST_LENGTH]


def dataset_source(uri: str) -> Any:
    """MLflow's dataset source for a store URI.

    A ``file://`` URI matches two of MLflow's source types equally well and MLflow warns about it
    on every call; the choice it makes is the right one, so the warning is only noise here.
    """
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        return resolve_dataset_source(uri)


def log_dataset_inputs(version: DatasetVersion, run_id: str | None = None) -> None:
    """Log every split of ``version`` as an input of ``run_id`` (default: the active run).

    Each split becomes a ``MetaDataset`` named after the dataset, with context = split name,
    source = the split's store URI, digest = :func:`mlflow_digest` of its sha256. The manifest is
    logged as the artifact ``datasets/<name>/manifest.json``.

    Raises:
        RegistryError: there is no run to log to, or MLflow refused the inputs.
    """
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise RegistryError("no active MLflow run to log the dataset to", hint="pass run_id")
        run_id = active.info.run_id
    inputs = []
    for split_name in SPLIT_NAMES:
        split = version.split(split_name)
        if split is None:
            continue
        dataset = MetaDataset(
            source=dataset_source(split.uri),
            name=version.name,
            digest=mlflow_digest(split.sha256),
        )
        tags = {
            "mlflow.data.context": split_name,
            "tuneops.sha256": split.sha256,
            "tuneops.version_digest": version.digest,
            "tuneops.rows": str(split.rows),
            "tuneops.tokens": str(split.tokens),
        }
        inputs.append(
            DatasetInput(
                dataset=dataset._to_mlflow_entity(),
                tags=[InputTag(key=k, value=v) for k, v in tags.items()],
            )
        )
    client = MlflowClient()
    try:
        client.log_inputs(run_id, datasets=inputs)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "manifest.json"
            path.write_text(json.dumps(version.manifest, indent=2, sort_keys=True))
            client.log_artifact(run_id, str(path), artifact_path=f"datasets/{version.name}")
    except MlflowException as exc:
        raise RegistryError(f"MLflow refused the dataset inputs of {version.ref}: {exc.message}") from exc
