"""Finding dataset versions in a store and getting their splits as local files.

A version exists when its ``manifest.json`` does; folders without one (an interrupted upload)
are invisible here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from tuneops.digests import file_sha256
from tuneops.errors import StoreError, UsageError, VersionNotFoundError
from tuneops.settings import TuneopsSettings
from tuneops.tasks.data.layout import MANIFEST, split_key, version_prefix
from tuneops.tasks.data.store import DataStore, open_store
from tuneops.tasks.data.types import DatasetVersion, SplitName
from tuneops.tasks.data.version import version_from_manifest

MIN_DIGEST_PREFIX = 6


def store_for(settings: TuneopsSettings) -> DataStore:
    """The data store the settings point at (``TUNEOPS_DATA_STORE_URI``)."""
    assert settings.data_store_uri is not None
    return open_store(settings.data_store_uri, s3_endpoint_url=settings.s3_endpoint_url)


def list_versions(store: DataStore, name: str | None = None) -> list[DatasetVersion]:
    """Every committed version (of ``name``, or of all datasets), oldest first."""
    prefix = f"datasets/{name}" if name else "datasets"
    versions = []
    for key in store.list(prefix):
        parts = key.split("/")
        if len(parts) == 4 and parts[3] == MANIFEST:
            try:
                versions.append(version_from_manifest(store, json.loads(store.read_bytes(key))))
            except (StoreError, ValueError, KeyError):
                continue  # unreadable manifest: not a usable version
    return sorted(versions, key=lambda v: (v.name, v.manifest.get("created_at", ""), v.digest))


def resolve_dataset_version(store: DataStore, ref: str) -> DatasetVersion:
    """``NAME`` (the newest version) or ``NAME@DIGEST`` (a unique prefix of at least 6 hex digits).

    Raises:
        UsageError: the reference is malformed or the digest prefix is ambiguous.
        VersionNotFoundError: no such dataset or version.
    """
    name, _, digest = ref.partition("@")
    if not name:
        raise UsageError(f"{ref!r}: expected NAME or NAME@DIGEST")
    versions = list_versions(store, name)
    if not versions:
        raise VersionNotFoundError(
            f"no dataset called {name!r} in {store.uri}", hint="run 'tuneops data list' to see what there is"
        )
    if not digest:
        return max(versions, key=lambda v: (v.manifest.get("created_at", ""), v.digest))
    if len(digest) < MIN_DIGEST_PREFIX:
        raise UsageError(f"{ref!r}: give at least {MIN_DIGEST_PREFIX} characters of the digest")
    matches = [v for v in versions if v.digest.startswith(digest.lower())]
    if not matches:
        raise VersionNotFoundError(
            f"dataset {name!r} has no version {digest}", hint=f"run 'tuneops data list {name}'"
        )
    if len(matches) > 1:
        raise UsageError(f"{ref!r} matches {len(matches)} versions; give more of the digest")
    return matches[0]


def materialize_split(
    version: DatasetVersion, split: SplitName, settings: TuneopsSettings, store: DataStore | None = None
) -> Path:
    """A local path holding ``split`` of ``version``, downloading it into the cache if needed.

    Files from a local store are returned where they are (versions are immutable). Downloads
    land in ``<home>/cache/datasets/<name>/<digest>/`` and are checked against the split's sha256.

    Raises:
        VersionNotFoundError: the version has no such split.
        StoreError: the download failed or the bytes do not match the digest.
    """
    info = version.split(split)
    if info is None:
        raise VersionNotFoundError(f"{version.ref} has no {split} split")
    parsed = urlparse(info.uri)
    if parsed.scheme == "file" and Path(unquote(parsed.path)).is_file():
        return Path(unquote(parsed.path))
    if store is None:  # the store the version lives in, which may differ from the settings' default
        root = version.uri.rsplit(f"/{version_prefix(version.name, version.digest)}", 1)[0]
        store = open_store(root, s3_endpoint_url=settings.s3_endpoint_url)
    key = split_key(version.name, version.digest, split)
    local = store.local_path(key)
    if local is not None and local.is_file():
        return local
    target = settings.state_home / "cache" / "datasets" / version.name / version.digest / f"{split}.jsonl"
    if target.is_file():
        return target
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    store.download(key, tmp)
    actual = file_sha256(tmp)
    if actual != info.sha256:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{info.uri}: content does not match its digest (got {actual[:12]})")
    tmp.replace(target)
    return target
