"""Where a split's data comes from: one file, a folder, a glob, or an ``s3://`` prefix of JSONL files.

A retraining loop needs a place where new examples are dropped: ``data.train: data/train/`` (or
``data/train/*.jsonl``, or ``s3://bucket/claims/train/``) means *the union of every JSONL file
there*, in a stable order (sorted by path relative to the folder or prefix), so dropping a new
file makes the next dataset version and nothing else does.

A single file is used as it is (versions of single-file specs keep their digests byte for byte).
Several files are concatenated, each ending with a newline, into one file under
``<home>/cache/sources/``, named by a hash of the members' identities, so an unchanged set is not
rewritten (and the versioning cache still recognises it).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from pathlib import Path

from tuneops.errors import UsageError

JSONL_SUFFIXES = (".jsonl",)


def s3_uri_of(path: Path | str) -> str | None:
    """The ``s3://`` URI a spec path names, or None.

    The spec keeps data locations as paths, and a path folds ``s3://b/p`` into ``s3:/b/p`` (and
    ``load_spec`` makes it absolute); the ``s3:`` component is where the URI begins.
    """
    text = str(path).replace("\\", "/")
    marker = text.find("s3:/")
    if marker < 0:
        return None
    rest = text[marker + len("s3:/") :].lstrip("/")
    return f"s3://{rest}" if rest else None


def is_collection(path: Path | str) -> bool:
    """Whether ``path`` names several files: a folder, a glob, or an S3 prefix."""
    return s3_uri_of(path) is not None or glob.has_magic(str(path)) or Path(path).is_dir()


def member_files(path: Path) -> list[Path]:
    """The JSONL files a folder or glob names, in a stable order (relative path)."""
    if glob.has_magic(str(path)):
        first = next(i for i, part in enumerate(path.parts) if glob.has_magic(part))
        base, pattern = Path(*path.parts[:first]), "/".join(path.parts[first:])
        files = [p for p in base.glob(pattern) if p.is_file()]
        return sorted(files, key=lambda p: p.as_posix())
    files = [p for p in path.rglob("*") if p.is_file() and p.suffix in JSONL_SUFFIXES]
    return sorted(files, key=lambda p: p.relative_to(path).as_posix())


def resolve_source(path: Path, home: Path, *, s3_endpoint_url: str | None = None) -> Path:
    """A local file holding what ``path`` names: the file itself, or the union of its members.

    Raises:
        UsageError: a folder, glob or prefix with no JSONL file in it.
    """
    uri = s3_uri_of(path)
    if uri is not None:
        return _union_from_s3(uri, home, s3_endpoint_url)
    if not is_collection(path):
        return path
    files = member_files(path)
    if not files:
        raise UsageError(f"{path}: no .jsonl file there", hint="drop the chat JSONL files into it")
    identity = [[p.resolve().as_posix(), *_stat(p)] for p in files]
    return _union(files, identity, home)


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _union(files: list[Path], identity: list[list[object]], home: Path) -> Path:
    key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]
    target = home / "cache" / "sources" / f"{key}.jsonl"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    with tmp.open("wb") as out:
        for file in files:
            with file.open("rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)
                if file.stat().st_size and not _ends_with_newline(file):
                    out.write(b"\n")
    tmp.replace(target)
    return target


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def _union_from_s3(uri: str, home: Path, s3_endpoint_url: str | None) -> Path:
    from tuneops.tasks.data.store import open_store

    store = open_store(uri, s3_endpoint_url=s3_endpoint_url)
    keys = [k for k in store.list("") if k.endswith(JSONL_SUFFIXES)]
    if not keys:
        raise UsageError(
            f"{uri}: no .jsonl object under this prefix", hint="upload the chat JSONL files there"
        )
    folder = home / "cache" / "sources" / "s3" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    local = []
    for key in keys:
        dest = folder / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        store.download(key, dest)
        local.append(dest)
    identity = [
        [uri, key, hashlib.sha256(dest.read_bytes()).hexdigest()]
        for key, dest in zip(keys, local, strict=True)
    ]
    return _union(local, identity, home)
