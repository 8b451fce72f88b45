"""Getting the dataset version a fine-tune trains on, and local files to upload from it.

The data stage owns versioning; this module only asks it. ``NAME@DIGEST`` picks an existing
version (its manifest in the data store); without one, the spec's data is versioned (a no-op
when identical bytes were versioned before).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from tuneops.tasks.data.types import DatasetVersion, SplitFile

from tuneops.errors import StoreError, UsageError, VersionNotFoundError
from tuneops.settings import TuneopsSettings
from tuneops.spec import Spec

_REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)@(?P<digest>[0-9a-f]{64})$")


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``NAME@DIGEST``; a malformed reference is a usage error naming the expected form."""
    match = _REF.match(ref.strip())
    if not match:
        raise UsageError(
            f"--dataset {ref!r} is not NAME@DIGEST",
            hint="use the reference 'tuneops data version' printed, e.g. support@<64 hex digits>",
        )
    return match.group("name"), match.group("digest")


def _store(settings: TuneopsSettings):  # type: ignore[no-untyped-def]
    from tuneops.tasks.data.store import open_store

    assert settings.data_store_uri is not None
    return open_store(settings.data_store_uri, s3_endpoint_url=settings.s3_endpoint_url)


def load_version(ref: str, settings: TuneopsSettings) -> DatasetVersion:
    """The dataset version ``NAME@DIGEST`` from its manifest in the data store."""
    from tuneops.tasks.data import layout

    name, digest = parse_ref(ref)
    store = _store(settings)
    key = layout.manifest_key(name, digest)
    if not store.exists(key):
        raise VersionNotFoundError(
            f"no dataset version {ref} in {settings.data_store_uri}",
            hint="run 'tuneops data version' first, or check NAME@DIGEST",
        )
    manifest = json.loads(store.read_bytes(key))
    splits = {
        split: SplitFile(
            name=split,  # type: ignore[arg-type]
            uri=store.uri_for(layout.split_key(name, digest, split)),
            sha256=info["sha256"],
            rows=int(info["rows"]),
            tokens=int(info["tokens"]),
        )
        for split, info in manifest["splits"].items()
    }
    return DatasetVersion(
        name=name,
        digest=digest,
        uri=store.uri_for(layout.version_prefix(name, digest)),
        splits=splits,
        manifest=manifest,
    )


def resolve_dataset(spec: Spec, settings: TuneopsSettings, ref: str | None = None) -> DatasetVersion:
    """``ref``'s version, or the spec's data versioned now."""
    if ref:
        return load_version(ref, settings)
    from tuneops.tasks import data

    version_dataset = getattr(data, "version_dataset", None)
    if version_dataset is not None:
        return version_dataset(spec, settings)  # type: ignore[no-any-return]
    from tuneops.tasks.data.version import version_from_spec

    return version_from_spec(spec, store=_store(settings), home=settings.state_home)


def local_split_path(version: DatasetVersion, split: str, settings: TuneopsSettings, scratch: Path) -> Path:
    """A local file with the split's bytes: the store's own file when local, else a download."""
    found = version.split(split)  # type: ignore[arg-type]
    if found is None:
        raise UsageError(f"dataset {version.ref} has no {split} split")
    parsed = urlparse(found.uri)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        if path.is_file():
            return path
        raise StoreError(f"{found.uri}: the {split} split of {version.ref} is missing from the store")
    from tuneops.tasks import data

    materialize = getattr(data, "materialize_split", None)
    if materialize is not None:
        return Path(materialize(version, split, settings))
    from tuneops.tasks.data import layout

    dest = scratch / f"{version.digest}-{split}.jsonl"
    if not dest.is_file():
        _store(settings).download(layout.split_key(version.name, version.digest, split), dest)
    return dest
