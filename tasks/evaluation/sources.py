"""Where the held-out rows come from: a dataset version's test split, or a local file.

The data store can materialise any split as a local file, so evaluation only ever reads a local
JSONL path; the dataset digest travels along for the answer cache and MLflow lineage.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tuneops.errors import UsageError
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec


@dataclass(frozen=True)
class TestSplit:
    """A local test file, the digest that names its data, and the train file for few-shot prompts."""

    __test__ = False

    path: Path
    digest: str
    train_path: Path | None = None


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_test_split(
    spec: Spec, settings: TuneopsSettings, dataset_ref: str | None = None, test_file: Path | None = None
) -> TestSplit:
    """The test split to evaluate on: ``--test-file``, else ``NAME@DIGEST``'s split, else ``data.test``.

    Raises:
        UsageError: both or neither of a dataset and a test file could be found.
        VersionNotFoundError: the dataset version or its test split does not exist.
    """
    if dataset_ref and test_file:
        raise UsageError("give either --dataset NAME@DIGEST or --test-file PATH, not both")
    if test_file is not None:
        path = Path(test_file)
        if not path.is_file():
            raise UsageError(f"{path}: no such test file")
        return TestSplit(path, _file_digest(path), spec.data.train if spec.data.train.is_file() else None)
    if dataset_ref:
        from tuneops.tasks.data.catalog import materialize_split, resolve_dataset_version, store_for

        store = store_for(settings)
        version = resolve_dataset_version(store, dataset_ref)
        train = materialize_split(version, "train", settings, store) if version.split("train") else None
        return TestSplit(materialize_split(version, "test", settings, store), version.digest, train)
    if spec.data.test is not None and spec.data.test.is_file():
        train = spec.data.train if spec.data.train.is_file() else None
        return TestSplit(spec.data.test, _file_digest(spec.data.test), train)
    raise UsageError(
        "no test split: the spec has no data.test file",
        hint="pass --dataset NAME@DIGEST (a versioned dataset with a test split) or --test-file PATH",
    )
